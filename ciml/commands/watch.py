"""``ciml watch``: predict new runs as a trigger announces them, and report the predictions."""

import contextlib
import logging

from cliff.command import Command

from ciml.base import positive_int
from ciml.commands.base import add_component_options, build_component, data_path
from ciml.commands.predict import (
    add_model_options,
    build_source,
    check_names,
    load_predictor,
    url_policy,
)
from ciml.errors import ConfigError
from ciml.plugins import get_manager

LOG = logging.getLogger(__name__)


def _non_negative_float(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


class Watch(Command):
    """Watch for finished runs (MQTT or polling) and predict each one"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--trigger", metavar="NAME", default="mqtt",
                            help="What announces finished runs: "
                                 + ", ".join(get_manager().names("trigger"))
                                 + " (default: mqtt)")
        add_model_options(parser)
        parser.add_argument("--publish-topic", metavar="TOPIC", default=None,
                            help="Also publish each prediction as JSON to this MQTT topic "
                                 "(on the broker given by --mqtt-host/--mqtt-port)")
        parser.add_argument("--learn", action="store_true",
                            help="Add finished, labelled runs to the raw cache, so that the "
                                 "next build-dataset includes them")
        parser.add_argument("--max-events", metavar="N", type=positive_int, default=None,
                            help="Stop after N runs of the build name were taken (the "
                                 "ones taken are finished)")
        parser.add_argument("--workers", metavar="N", type=positive_int, default=4,
                            help="Runs handled at once; fetching logs is mostly waiting, "
                                 "predicting is one at a time (default: 4)")
        parser.add_argument("--queue-size", metavar="N", type=positive_int, default=100,
                            help="Runs waiting at most; a full queue makes the trigger wait "
                                 "(default: 100)")
        parser.add_argument("--fetch-attempts", metavar="N", type=positive_int, default=6,
                            help="Tries to look a run up and fetch its metrics, which CI "
                                 "systems upload after reporting (default: 6)")
        parser.add_argument("--fetch-delay", metavar="SECONDS", type=float, default=5.0,
                            help="Seconds before the second try, doubling after (default: 5)")
        parser.add_argument("--drain-timeout", metavar="SECONDS", type=_non_negative_float,
                            default=30.0,
                            help="On SIGTERM or SIGINT, seconds to finish the runs in hand; "
                                 "the others stay unacknowledged and are delivered again at "
                                 "the next start (a second signal stops at once; default: 30)")
        parser.add_argument("--status-interval", metavar="SECONDS", type=float, default=60.0,
                            help="Seconds between status lines on stderr; 0 for none "
                                 "(default: 60)")
        add_component_options(parser, "trigger", title="trigger options")
        return parser

    def take_action(self, parsed_args):
        with self.watching(parsed_args) as watcher:
            watcher.run()
        return 0

    @contextlib.contextmanager
    def watching(self, parsed_args, watcher_class=None, **overrides):
        """The watcher the options describe, with its store and reporters registered.

        ``ciml serve --watch`` runs it in a thread of its own: a
        ``watcher_class`` and keyword ``overrides`` of its arguments.
        """
        from ciml import online
        from ciml.commands.prediction import storing

        path = data_path(self)
        # Names first: a typo is reported before TensorFlow loads.
        get_manager().get("trigger", parsed_args.trigger)
        check_names(parsed_args)
        trigger = build_component("trigger", parsed_args.trigger, parsed_args)
        source = build_source(parsed_args)
        reporters = []
        stack = contextlib.ExitStack()
        try:
            predictor = load_predictor(self, parsed_args)
            if not predictor.build_name:
                raise ConfigError("the dataset records no build name; give --build-name")
            # Before subscribing: the first events must not wait for the model.
            predictor.warm_up()
            trigger.setup(data_path=path, build_name=predictor.build_name,
                          result_source=source)
            # The store first: registered first, it is handed each prediction first.
            store = stack.enter_context(storing(self, parsed_args))
            reporters = self._start_reporters(
                {**vars(parsed_args), "data_path": path,
                 "prediction_store": store.store if store is not None else None})
            options = dict(
                source=source, data_path=path,
                learn=parsed_args.learn, max_events=parsed_args.max_events,
                workers=parsed_args.workers, queue_size=parsed_args.queue_size,
                fetch_attempts=parsed_args.fetch_attempts,
                fetch_delay=parsed_args.fetch_delay, drain_timeout=parsed_args.drain_timeout,
                url_policy=url_policy(parsed_args),
                status_interval=parsed_args.status_interval, stdout=self.app.stdout,
                stderr=self.app.stderr)
            options.update(overrides)
            yield (watcher_class or online.Watcher)(predictor, trigger, **options)
        finally:
            self._stop_reporters(reporters)
            stack.close()
            if source is not None:
                source.close()

    @staticmethod
    def _start_reporters(options):
        """Register the reporters plugins offer for these options (``--publish-topic``...)."""
        manager = get_manager()
        reporters = []
        for reporter in manager.hook.ciml_watch_reporters(options=options):
            if reporter is None:
                continue
            name = f"watch-reporter-{len(reporters)}-{type(reporter).__name__}"
            manager.add_plugin(reporter, name)
            reporters.append((name, reporter))
        return reporters

    @staticmethod
    def _stop_reporters(reporters):
        manager = get_manager()
        for name, reporter in reporters:
            manager.unregister(name)
            close = getattr(reporter, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    LOG.exception("could not close the reporter %s", name)

"""The ``ciml`` command: a cliff App whose commands come from entry points."""

import argparse
import inspect
import logging
import sys

from cliff.app import App
from cliff.commandmanager import CommandManager
from cliff.help import HelpCommand

import ciml
from ciml import paths
from ciml.errors import Interrupted

# Third-party loggers that are chatty at INFO, which is cliff's default level.
_QUIET_LOGGERS = ("stevedore", "urllib3", "matplotlib", "PIL", "tensorflow",
                  "absl", "h5py", "numcodecs", "zarr", "asyncio", "paho",
                  "botocore", "aiobotocore", "s3fs", "fsspec", "aiohttp")


#: Root-logger handlers the last CimlApp installed.
_installed_handlers = []


class _VersionAction(argparse.Action):
    """``--version``: ciml's version and every installed plugin distribution."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest=dest, nargs=0,
                         default=argparse.SUPPRESS,
                         help="Show ciml's version and the plugin distributions, and exit.")

    def __call__(self, parser, namespace, values, option_string=None):
        from ciml.plugins import get_manager

        print(f"ciml {ciml.__version__}")
        dists = sorted({v for v in get_manager().plugins.values() if v[0]})
        for dist, version in dists:
            print(f"  plugins from {dist} {version}")
        parser.exit()


def _seed_cliff_distributions():
    """Tell cliff which distribution provides each command's package, cheaply.

    cliff names the distribution of a third-party command in its help
    epilog, and to find it calls ``importlib.metadata.packages_distributions``,
    which reads the file list of every installed distribution: about 0.3 s on
    every ``ciml`` command.  Only the packages that provide ``ciml.cli``
    commands matter, and their entry points say so.  Should cliff drop the
    private cache this fills, nothing changes but the speed.
    """
    import importlib.metadata

    import cliff.command

    if getattr(cliff.command, "_dists_by_mods", "unknown") is not None:
        return
    mapping = {}
    for dist in importlib.metadata.distributions():
        try:
            eps = [ep for ep in dist.entry_points if ep.group == "ciml.cli"]
        except Exception:  # a broken dist-info must not break ciml
            continue
        if eps:
            name = dist.metadata["Name"]
            for ep in eps:
                mapping.setdefault(ep.value.split(":")[0].split(".")[0], name)
    mapping.setdefault("ciml", "ciml")
    cliff.command._dists_by_mods = mapping


class LazyCommandManager(CommandManager):
    """cliff's command manager, but a command's module is imported only when it runs.

    cliff asks stevedore for the ``ciml.cli`` entry points, and stevedore
    imports every command module to hand them over: about 30 ms of CPU
    that a one-run ``ciml predict`` does not need.  Here the entry points
    are read (not loaded); cliff loads the one it finds (``find_command``
    calls ``load()``), and ``ciml help`` loads them all to describe them.
    """

    def load_commands(self, namespace):
        import importlib.metadata

        self.group_list.append(namespace)
        for ep in importlib.metadata.entry_points(group=namespace):
            if self._is_module_ignored(ep.value.split(":")[0], self.ignored_modules):
                continue
            name = ep.name.replace("_", " ") if self.convert_underscores else ep.name
            if name in self.commands:
                logging.getLogger(__name__).warning(
                    "found duplicate implementations of the %r command in %s and %s",
                    name, self.commands[name].value, ep.value)
            self.commands[name] = ep


class CimlHelp(HelpCommand):
    """print detailed help for another command, with the options of the plugins it names"""

    def get_parser(self, prog_name):
        # cliff's help takes command words only, so that "ciml cache-data
        # --metric-source csvdir --help", which cliff turns into "ciml help
        # cache-data --metric-source csvdir", failed on the option.
        parser = super(HelpCommand, self).get_parser(prog_name)
        parser.add_argument("cmd", nargs=argparse.REMAINDER,
                            help="the command, and any of its options; a plugin "
                                 "chosen there (--metric-source NAME) shows its "
                                 "options only")
        return parser

    def take_action(self, parsed_args):
        from ciml.commands.base import chosen_components, only_components

        words = list(parsed_args.cmd or ())
        try:
            factory, name, rest = self.app.command_manager.find_command(words)
        except ValueError:
            factory, rest = None, []
        if factory is None or not rest:
            parsed_args.cmd = [w for w in words if not w.startswith("-")]
            return super().take_action(parsed_args)
        kwargs = {}
        if "cmd_name" in inspect.getfullargspec(factory.__init__).args:
            kwargs["cmd_name"] = name
        cmd = factory(self.app, self.app_args, **kwargs)
        full_name = name if self.app.interactive_mode else f"{self.app.NAME} {name}"
        with only_components(chosen_components(rest)):
            cmd_parser = cmd.get_parser(full_name)
        cmd_parser.print_help(self.app.stdout)
        return 0


class CimlApp(App):
    """ciml: learn from CI history, predict why new runs fail."""

    CONSOLE_MESSAGE_FORMAT = "%(message)s"
    # cliff derives the name from sys.argv[0], which is wrong under
    # ``python -m``, ``python -c`` or an embedding program such as pytest.
    NAME = "ciml"

    def __init__(self):
        _seed_cliff_distributions()
        super().__init__(
            description=(
                "ciml (CI machine learning) learns from a CI system's history "
                "(resource usage of each job, joined with its results) and "
                "predicts whether and why new runs failed."),
            version=ciml.__version__,
            command_manager=LazyCommandManager("ciml.cli"),
            deferred_help=True,
        )
        self.command_manager.add_command("help", CimlHelp)
        from ciml.commands.complete import Complete

        # Completes ciml's names too, and needs no bash-completion package.
        self.command_manager.add_command("complete", Complete)

    def build_option_parser(self, description, version, argparse_kwargs=None):
        kwargs = dict(argparse_kwargs or {})
        # 'resolve' lets ciml replace cliff's --version with one that also
        # lists the plugin distributions.
        kwargs.setdefault("conflict_handler", "resolve")
        kwargs.setdefault("prog", self.NAME)
        parser = super().build_option_parser(description, version, kwargs)
        parser.add_argument("--version", action=_VersionAction)
        parser.add_argument(
            "--data-path", metavar="PATH", default=None,
            help=("Folder holding the raw cache, datasets, experiments and "
                  f"models (env {paths.ENV_VAR}; default: "
                  "$XDG_DATA_HOME/ciml, i.e. ~/.local/share/ciml), or an fsspec URL "
                  "such as s3://bucket/prefix."))
        parser.add_argument(
            "--storage-option", metavar="KEY=VALUE", action="append", default=[],
            dest="storage_options",
            help=("An option of the data path's file system, repeatable "
                  "(s3: endpoint_url=http://host:8333, profile=NAME, "
                  "client_kwargs.region_name=...). Credentials are best left to "
                  "the environment or an AWS profile."))
        parser.add_argument(
            "--catalog-uri", metavar="URL", default=None,
            help=("SQLAlchemy URL of the raw cache's catalog (env "
                  f"{paths.CATALOG_ENV_VAR}; default: SQLite in a local data path). "
                  "Needed with an object-store data path: mysql+pymysql://user@host/db "
                  "when several machines share the store."))
        parser.add_argument(
            "--config", metavar="FILE", default=None,
            help=("Configuration file: a TOML table of settings per plugin (env "
                  "CIML_CONFIG; default: ciml.toml in the data path, if there)."))
        return parser

    def configure_logging(self):
        # cliff adds root handlers on every run; when ciml runs more than once
        # in a process (tests, the demo, embedding), handlers of an earlier
        # app would write to its streams, which may be closed by now.
        root = logging.getLogger("")
        for handler in _installed_handlers:
            root.removeHandler(handler)
        _installed_handlers.clear()
        before = set(root.handlers)
        super().configure_logging()
        _installed_handlers.extend(h for h in root.handlers if h not in before)
        from ciml import progress
        from ciml.http import RedactingFilter

        progress.set_verbosity(self.options.verbose_level)
        # Whatever a library logs (a URL with its password in an error,
        # with --debug) is shown without credentials.
        for handler in _installed_handlers:
            handler.addFilter(RedactingFilter())
        if not self.options.debug:
            for name in _QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)

    def interact(self):
        # Bare ``ciml`` prints the help (commands included) instead of cliff's
        # interactive shell: one way to use ciml, the one the docs describe.
        self._bare_result = self.run_subcommand(["help"])

    def run(self, argv):
        self._bare_result = None
        result = super().run(argv)
        return self._bare_result if self._bare_result is not None else result

    def clean_up(self, cmd, result, err):
        previous = getattr(self, "_previous_config", None)
        if previous is not None:
            from ciml.base import config

            # ciml run again in this process (tests, embedding) starts from a clean slate.
            config.use(previous)
            self._previous_config = None
        # cliff exits 130 on Ctrl-C without a word; say so, and what was kept
        # (commands raise ciml.errors.Interrupted to tell).
        if isinstance(err, KeyboardInterrupt):
            detail = str(err) if isinstance(err, Interrupted) else ""
            self.stderr.write(f"interrupted{': ' + detail if detail else ''}\n")
            self.stderr.flush()

    def prepare_to_run_command(self, cmd):
        from ciml.base import config
        from ciml.commands.base import shape_output

        shape_output(cmd)
        options = getattr(self, "options", None)
        if options is not None:  # None: a command made outside run() (tests)
            # Before the command parses its options: plugins may read their table then.
            self._previous_config = config.use(config.Config.load(
                getattr(options, "config", None), data_path=self.data_path))

    @property
    def data_path(self):
        from ciml.storage import parse_storage_options

        options = parse_storage_options(getattr(self.options, "storage_options", None))
        _redact_secrets(options)
        return paths.DataPath(self.options.data_path, storage_options=options,
                              catalog_uri=getattr(self.options, "catalog_uri", None))


def _redact_secrets(options):
    """Tell the log filter the secret values of ``--storage-option``."""
    from ciml.http import add_secret
    from ciml.storage import secret_values

    for value in secret_values(options):
        add_secret(value)


def main(argv=None):
    """Entry point of the ``ciml`` console script."""
    if argv is None:
        argv = sys.argv[1:]
    from ciml import native_logs

    native_logs.enable()
    return CimlApp().run(argv)


if __name__ == "__main__":
    sys.exit(main())

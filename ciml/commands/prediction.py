"""``ciml prediction list|show|prune|stats``: the predictions ``predict`` and ``watch`` stored."""

import contextlib
import logging

from cliff.lister import Lister
from cliff.show import ShowOne

from ciml.commands.base import data_path

LOG = logging.getLogger(__name__)


def add_store_option(parser):
    """``--store-uri``: the prediction store a command reads or writes."""
    parser.add_argument("--store-uri", metavar="URL", default=None,
                        help="Prediction store, a SQLAlchemy URL such as "
                             "mysql+pymysql://USER:PASSWORD@HOST/DATABASE (env "
                             "CIML_STORE_URI; default: uri in the config file's [store] "
                             "table, else predictions.sqlite in the data path)")


def open_store(cmd, parsed_args, create=True):
    """The :class:`ciml.prediction_store.PredictionStore` a command's options name."""
    from ciml.prediction_store import PredictionStore, resolve_uri

    uri = resolve_uri(getattr(parsed_args, "store_uri", None),
                      lambda: data_path(cmd, create=create))
    return PredictionStore(uri, create=create)


def add_storing_options(parser):
    """What ``predict`` and ``watch`` take to store their predictions."""
    add_store_option(parser)
    parser.add_argument("--no-store", action="store_true",
                        help="Do not store the predictions in the prediction store")


@contextlib.contextmanager
def storing(cmd, parsed_args):
    """Within, every prediction the ``ciml_prediction_made`` hook sees is stored.

    Yields the :class:`ciml.prediction_store.StoreReporter` (``None`` with
    ``--no-store``).  It is registered first, so the store has a
    prediction before another reporter (Gerrit) links to it.
    """
    from ciml.plugins import get_manager
    from ciml.prediction_store import NoDefaultStore, StoreReporter

    if getattr(parsed_args, "no_store", False):
        yield None
        return
    try:
        store = open_store(cmd, parsed_args, create=True)
    except NoDefaultStore as exc:
        # Predicting still works; only keeping the records needs a database.
        LOG.warning("predictions are not stored: %s; --no-store silences this", exc)
        yield None
        return
    reporter = StoreReporter(store, retention=retention())
    manager = get_manager()
    manager.add_plugin(reporter, STORE_PLUGIN)
    try:
        yield reporter
    finally:
        manager.unregister(STORE_PLUGIN)
        reporter.close()


#: The name the store reporter is registered under for one command.
STORE_PLUGIN = "prediction-store"


def retention():
    """``retention`` of the config's ``[store]`` table, as a duration, or ``None``."""
    from ciml.base.config import settings
    from ciml.prediction_store import parse_age

    return settings("store").get("retention", parse_age)


def _since(text):
    import argparse

    from ciml.errors import ConfigError
    from ciml.prediction_store import parse_since

    try:
        return parse_since(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _round(value):
    return round(value, 4) if isinstance(value, float) else value


def _row_values(row):
    return [row["id"], row["time"], row["run_id"], row["build_name"], row["status"] or "",
            row["predicted"] or "", _round(row["probability"]), row["unusual"],
            row["model"], row["explanation"] or "", row["error"] or ""]


LIST_COLUMNS = ("id", "time", "run_id", "build_name", "status", "predicted", "probability",
                "unusual", "model", "why", "error")


class PredictionList(Lister):
    """List stored predictions, newest first"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        add_store_option(parser)
        parser.add_argument("--build-name", metavar="JOB", default=None,
                            help="only predictions of this job")
        parser.add_argument("--class", dest="predicted", metavar="CLASS", default=None,
                            help="only runs predicted this class")
        parser.add_argument("--unusual", action="store_true",
                            help="only runs unusual for their job")
        parser.add_argument("--since", metavar="TIME", type=_since, default=None,
                            help="only predictions made since this time: ISO 8601 "
                                 "(2026-12-01, 2026-12-01T12:00Z) or an age (24h, 7d)")
        parser.add_argument("--model", metavar="DATASET/EXPERIMENT", default=None,
                            help="only predictions of this model")
        parser.add_argument("--errors", action="store_true",
                            help="only runs that could not be predicted, with why")
        parser.add_argument("--limit", metavar="N", type=int, default=50,
                            help="rows at most (default: 50; at most 1000)")
        parser.add_argument("--after", metavar="CURSOR", default=None,
                            help="the next page: the cursor the previous page named")
        return parser

    def take_action(self, parsed_args):
        store = open_store(self, parsed_args, create=False)
        with store:
            page = store.list(build_name=parsed_args.build_name,
                              predicted=parsed_args.predicted,
                              unusual=True if parsed_args.unusual else None,
                              since=parsed_args.since, model=parsed_args.model,
                              errors=True if parsed_args.errors else None,
                              limit=parsed_args.limit, after=parsed_args.after)
        if page.next_cursor:
            self.app.stderr.write(f"more predictions: --after {page.next_cursor}\n")
        return LIST_COLUMNS, [_row_values(r) for r in page.items]


class PredictionShow(ShowOne):
    """Show a run's stored prediction: probabilities, explanation, unusual score, history"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        add_store_option(parser)
        parser.add_argument("run", metavar="RUN", help="the run id (or a prediction's id)")
        parser.add_argument("--model", metavar="DATASET/EXPERIMENT", default=None,
                            help="this model's prediction (default: the newest)")
        return parser

    def take_action(self, parsed_args):
        from ciml.errors import NotFoundError

        store = open_store(self, parsed_args, create=False)
        with store:
            rows = store.for_run(parsed_args.run)
            if not rows and parsed_args.run.isdigit():
                row = store.get(int(parsed_args.run))
                rows = store.for_run(row["run_id"]) if row else []
            reports = store.reports_of(rows[0]["run_id"]) if rows else []
        if parsed_args.model:
            chosen = [r for r in rows if r["model"] == parsed_args.model]
            if rows and not chosen:
                raise NotFoundError(
                    f"run {parsed_args.run!r} has no prediction by model "
                    f"{parsed_args.model!r}; it has: " + ", ".join(r["model"] for r in rows))
            rows = chosen or rows
        if not rows:
            raise NotFoundError(f"no stored prediction of run {parsed_args.run!r} in "
                                f"{store.url}")
        row = rows[0]
        record = row.get("record") or {}
        unusual = record.get("unusual") or {}
        data = {k: row[k] for k in ("id", "run_id", "build_uuid", "build_name", "status",
                                    "actual", "predicted", "probability")}
        data["probability"] = _round(data["probability"])
        data["probabilities"] = {k: _round(v) for k, v in
                                 (row.get("probabilities") or {}).items()}
        if record.get("candidates"):
            data["candidates"] = [c.get("class") for c in record["candidates"]]
        data.update(unusual=row["unusual"], unusual_score=row["unusual_score"],
                    unusual_percentile=row["unusual_percentile"],
                    unusual_features=[f"{f['feature']} ({f['z']:+.1f})"
                                      for f in unusual.get("features") or ()])
        data["why"] = row["explanation"] or ""
        data["windows"] = [f"{w.get('start_s')}-{w.get('end_s')} s"
                           for w in (record.get("explanation") or {}).get("windows") or ()]
        data.update({k: row[k] for k in ("error", "reason", "model", "model_fingerprint",
                                         "dataset", "dataset_fingerprint", "experiment",
                                         "time", "stored")})
        data["artifacts_url"] = record.get("artifacts_url") or ""
        data["metadata"] = dict(sorted((record.get("metadata") or {}).items()))
        data["other_models"] = [f"{r['model']}: {r['predicted'] or 'error'} ({r['time']})"
                                for r in rows if r is not row]
        data["reports"] = [f"{r['reporter']} {r['report_key']}: {r['state']}"
                           for r in reports]
        data = {k: ("" if v is None else v) for k, v in data.items()}
        return tuple(data), tuple(data.values())


class PredictionPrune(Lister):
    """Delete stored predictions older than an age (or the [store] retention)"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        add_store_option(parser)
        parser.add_argument("--older-than", metavar="AGE", default=None,
                            help="delete predictions made longer ago than this (90d, 12h, "
                                 "2w); default: retention in the config file's [store] table")
        return parser

    def take_action(self, parsed_args):
        from ciml.base.config import settings
        from ciml.errors import ConfigError
        from ciml.prediction_store import parse_age

        age = parse_age(parsed_args.older_than) if parsed_args.older_than else retention()
        if age is None:
            raise ConfigError("give --older-than AGE (e.g. 90d), or set retention in the "
                              "[store] table of the config file")
        store = open_store(self, parsed_args, create=False)
        with store:
            deleted = store.prune(age)
            left = store.count()
        shown = parsed_args.older_than or settings("store").get("retention", str)
        return ("deleted", "kept", "older_than"), [(deleted, left, shown)]


class PredictionStats(ShowOne):
    """Show the prediction store: where, how many predictions, bytes on disk per prediction"""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        add_store_option(parser)
        return parser

    def take_action(self, parsed_args):
        store = open_store(self, parsed_args, create=False)
        with store:
            size = store.storage()
            jobs = store.jobs()
            classes = store.classes()
        from ciml.base.config import settings

        retention()  # a bad retention is an error here too
        keep = settings("store").get("retention", str)
        data = {"store": store.url, "predictions": size["predictions"], "bytes": size["bytes"],
                "bytes_per_prediction": size["bytes_per_prediction"],
                "jobs": {j["build_name"] or "": j["predictions"] for j in jobs},
                "classes": classes, "unusual": sum(j["unusual"] for j in jobs),
                "errors": sum(j["errors"] for j in jobs),
                "retention": keep or ""}
        data = {k: ("" if v is None else v) for k, v in data.items()}
        return tuple(data), tuple(data.values())

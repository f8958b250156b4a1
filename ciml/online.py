"""The online stage: predict given runs (``ciml predict``) and new runs as they finish (``watch``).

Both load the trained model and the dataset's fitted normalizer chain once,
and turn a run's metrics into an example exactly as the training examples
were made (:meth:`ciml.model.TrainedModel.predict_frame`).  Every
prediction is a plain dict, the *prediction record*::

    {"run_id", "build_uuid", "build_name", "status", "predicted",
     "probabilities": {class: p}, "unusual", "actual", "dataset",
     "experiment", "model", "dataset_fingerprint", "model_fingerprint",
     "artifacts_url", "trigger", "metadata", "time"}

with ``error`` (and ``reason``) set instead of ``predicted`` when the run
could not be predicted.  ``unusual`` compares the run with the dataset's
training runs, whatever the model predicts (:mod:`ciml.dataset.profile`):
``{"score", "percentile", "unusual", "features": [{"feature", "z"}]}``, or
``None`` for a dataset built without a profile.  ``explanation`` says why
the model predicted its class (:func:`ciml.explain.explanation`); a
multiclass run below the model's confidence floor is predicted
``uncertain``, with ``candidates`` (its two most likely classes).
``watch`` prints one record per line on stdout and hands it to the
``ciml_prediction_made`` hook (the MQTT publisher of ``--publish-topic`` is
one such plugin).  Records are built in :meth:`Predictor.record` and
:meth:`Predictor.error_record` only.

The watcher's shape: the trigger runs on the main thread and hands events
to :meth:`Watcher.on_event`, which only filters and queues them; a bounded
queue feeds a small pool of worker threads that resolve the run, fetch its
metrics (retrying, because CI systems upload logs after they report a
result), predict and report.  A full queue makes the trigger wait.  An
event is acknowledged to its trigger only once its record is out, so a
run queued or being fetched when the watcher stops (SIGTERM drains for
``--drain-timeout`` seconds first) or dies is delivered again at the next
start: by the broker's persistent session, or by the poll cursor.
"""

import collections
import datetime as dt
import json
import logging
import pathlib
import queue
import signal
import sys
import threading
import time

from ciml.errors import CimlError, MetricsUnavailable, NotFoundError, SourceError
from ciml.records import FAILED, PASSED, RunRecord

LOG = logging.getLogger(__name__)

#: Metric failures that may heal by themselves: logs still uploading, a
#: flaky server, a file caught half written.
RETRY_REASONS = frozenset({"missing", "http-error", "connection-error", "truncated-gzip",
                           "empty", "header-only"})


class Interrupted(Exception):
    """The watcher was told to stop while this run was waiting."""


def _now():
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _dataset_build_name(dataset):
    for value in (getattr(dataset, "build_name", None),
                  (getattr(dataset, "config", None) or {}).get("build_name")):
        if value:
            return value
    return None


def metric_source_for(dataset, name=None, options=None):
    """The metric source a dataset's runs were cached with, built with its options.

    ``name`` and ``options`` (the ``--metric-source`` of ``predict``/``watch``
    and the metric source options given, or a function of the chosen class
    that returns them) override what the dataset records;
    recorded options apply only to the source they were recorded for.
    Secrets are never recorded: give them again.
    """
    from ciml.plugins import get_manager

    config = getattr(dataset, "config", None) or {}
    recorded = config.get("metric_source")
    name = name or recorded or "dstat"
    params = dict(config.get("metric_source_options") or {}) if name == recorded else {}
    cls = get_manager().get("metric_source", name)
    known = {p.name for p in cls.parameters}
    params = {k: v for k, v in params.items() if k in known and v is not None}
    params.update((options(cls) if callable(options) else options) or {})
    return cls.from_options(params)


def model_fingerprint(data_path, dataset, experiment):
    """A short digest of a trained model's ``metadata.json``: which training made it.

    Retraining under the same name gives another fingerprint (the metadata
    records the training time and seed), so a stored prediction says which
    model of that name made it.  ``None`` when the model has no metadata.
    """
    import hashlib

    from ciml.model import METADATA_FILE

    try:
        data = (data_path.model(dataset, experiment) / METADATA_FILE).read_bytes()
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest()[:16]


def _why(result):
    """The explanation (and an uncertain run's candidates) a model's result carries."""
    return {k: result[k] for k in ("explanation", "candidates") if k in result}


class Predictor:
    """A trained model loaded once, with the metric source that feeds it.

    ``model`` is anything with ``predict_frame(frame) -> {"predicted",
    "probabilities"}`` and ``classes`` (a :class:`ciml.model.TrainedModel`,
    or a fake in tests), or a callable returning one: then it is loaded on
    first use, so that ``predict`` refuses a broken input file before it
    pays for loading TensorFlow.  Predictions are serialized: the model's own
    threads already use the cores, and not every estimator is thread-safe.
    """

    def __init__(self, model, *, dataset_name, experiment_name, build_name=None,
                 metric_source=None, dataset=None, unusual_percentile=None):
        self._model = None if callable(model) and not hasattr(model, "predict_frame") \
            else model
        self._load_model = model if self._model is None else None
        #: Runs at or above this percentile of the training runs are unusual.
        self.unusual_percentile = unusual_percentile
        self.dataset = dataset if dataset is not None else getattr(model, "dataset", None)
        self.dataset_name = dataset_name
        self.experiment_name = experiment_name
        self.build_name = build_name or _dataset_build_name(self.dataset)
        self.metric_source = metric_source
        #: What the prediction store records beside each prediction: which
        #: dataset build and which training made it.
        self.dataset_fingerprint = getattr(self.dataset, "fingerprint", None)
        self.model_fingerprint = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, data_path, dataset, experiment, *, metric_source=None,
             metric_options=None, unusual_percentile=None, lazy=False):
        """The model of ``dataset`` x ``experiment``; ``lazy`` defers loading the estimator.

        ``metric_source`` (a name or an instance) and ``metric_options``
        override the metric source the dataset records.
        """
        from ciml.dataset import Dataset
        from ciml.model import TrainedModel

        ds = Dataset.open(data_path, dataset)
        if metric_source is None or isinstance(metric_source, str):
            metric_source = metric_source_for(ds, metric_source, metric_options)

        def load_model():
            return TrainedModel.load(data_path, dataset, experiment)

        predictor = cls(load_model if lazy else load_model(), dataset_name=dataset,
                        experiment_name=experiment, metric_source=metric_source, dataset=ds,
                        unusual_percentile=unusual_percentile)
        predictor.model_fingerprint = model_fingerprint(data_path, dataset, experiment)
        return predictor

    @property
    def model(self):
        """The model, loaded now if it was not yet."""
        with self._lock:
            return self._model_locked()

    def _model_locked(self):
        if self._model is None:
            self._model = self._load_model()
            if self.dataset is None:
                self.dataset = getattr(self._model, "dataset", None)
        return self._model

    def stamp(self, fetched):
        """``fetched`` with its metric source recorded (for ``watch --learn``)."""
        stamp = getattr(self.metric_source, "stamp", None)
        return stamp(fetched) if stamp is not None else fetched

    @property
    def classes(self):
        if self._model is None and getattr(self.dataset, "classes", None):
            return list(self.dataset.classes)
        return list(getattr(self.model, "classes", []) or [])

    @property
    def model_name(self):
        return f"{self.dataset_name}/{self.experiment_name}"

    def label_of(self, run):
        """The run's true class for this dataset, or ``None`` if it has none."""
        if self.dataset is not None and hasattr(self.dataset, "label_of"):
            return self.dataset.label_of(run)
        return run.status if run.status in (PASSED, FAILED) else None

    def predict_frame(self, frame):
        with self._lock:
            model = self._model_locked()
            if self.unusual_percentile is None:
                result = model.predict_frame(frame)
            else:
                result = model.predict_frame(frame, unusual_percentile=self.unusual_percentile)
        probabilities = {str(k): float(v) for k, v in result["probabilities"].items()}
        return {"predicted": str(result["predicted"]), "probabilities": probabilities,
                "unusual": result.get("unusual"), **_why(result)}

    def warm_up(self, rows=120):
        """Load the model and predict one made-up run, so the first real run does not wait.

        Loading a model is only part of its first prediction's cost: the
        normalizer chain, TensorFlow's traced functions and the explainer
        are built on first use too.  ``watch`` calls this before it
        subscribes, so that no event queues behind that work (seconds on a
        busy machine).  The made-up run is ``rows`` seconds of ones in
        every column the dataset was built from; its prediction is thrown
        away.  Returns the seconds it took, or ``None`` when the dataset's
        chain cannot take such a run (it then warms on the first event).
        """
        started = time.monotonic()
        self.model  # noqa: B018 -- a model that cannot load fails here, loudly
        features = list(getattr(self.dataset, "features", None) or ())
        if not features:
            return None
        import numpy as np
        import pandas as pd

        index = pd.date_range("2000-01-01", periods=rows, freq="s", tz="UTC", name="time")
        frame = pd.DataFrame(np.ones((rows, len(features))), index=index, columns=features)
        try:
            self.predict_frame(frame)
        except Exception as exc:  # a third-party step may want more than ones
            LOG.debug("warming the model up failed: %s", exc, exc_info=True)
            return None
        elapsed = time.monotonic() - started
        LOG.info("model %s ready in %.2f s", self.model_name, elapsed)
        return elapsed

    def base_record(self, run=None, event=None):
        record = {
            "run_id": None, "build_uuid": None, "build_name": None, "status": None,
            "dataset": self.dataset_name, "experiment": self.experiment_name,
            "model": self.model_name, "artifacts_url": None, "trigger": None,
            "metadata": {}, "time": _now(),
            "dataset_fingerprint": self.dataset_fingerprint,
            "model_fingerprint": self.model_fingerprint,
        }
        if event is not None:
            record.update(run_id=event.run_id or event.build_uuid, build_uuid=event.build_uuid,
                          build_name=event.build_name, status=event.status,
                          artifacts_url=event.artifacts_url, trigger=event.trigger,
                          metadata={k: v for k, v in (event.metadata or {}).items()
                                    if isinstance(v, (str, int, float, bool))})
        if run is not None:
            record.update(run_id=run.id, build_uuid=run.build_uuid or record["build_uuid"],
                          build_name=run.build_name, status=run.status,
                          artifacts_url=run.artifacts_url or record["artifacts_url"])
            record["metadata"].update({k: v for k, v in (run.metadata or {}).items()
                                       if isinstance(v, (str, int, float, bool))})
        if record["artifacts_url"]:
            # Printed, published and stored: never with the URL's credentials.
            from ciml.http import redact_url

            record["artifacts_url"] = redact_url(record["artifacts_url"])
        return record

    def record(self, run, frame, event=None):
        record = self.base_record(run, event)
        record.update(self.predict_frame(frame))
        label = None
        try:
            label = self.label_of(run)
        except Exception:  # a label is a nicety here, never a reason to fail
            LOG.debug("no label for %s", run.id, exc_info=True)
        record["actual"] = label
        return record

    def error_record(self, exc, run=None, event=None, run_id=None):
        record = self.base_record(run, event)
        if run_id and not record["run_id"]:
            record["run_id"] = run_id
        record["predicted"] = None
        record["probabilities"] = {}
        record["unusual"] = None
        record["explanation"] = None
        record["error"] = str(exc) or type(exc).__name__
        record["reason"] = getattr(exc, "reason", None) or type(exc).__name__
        return record


# -- ciml predict --------------------------------------------------------------


def default_experiment(data_path, dataset):
    """The experiment of the dataset's only trained model (``--experiment`` omitted)."""
    from ciml.paths import check_name

    folder = data_path.models / check_name(dataset, "dataset name")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()
                   and not p.name.startswith(".")) if folder.is_dir() else []
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotFoundError(f"no model is trained on dataset {dataset!r}; "
                            "run ciml train-model first")
    raise CimlError(f"dataset {dataset!r} has several trained models; choose one with "
                    "--experiment: " + ", ".join(names))


def prediction_table(records, classes):
    """``(columns, rows)`` for ``ciml predict``: one row per run, one column per class."""
    classes = list(classes) or sorted({c for r in records for c in r.get("probabilities", {})})
    with_actual = any(r.get("actual") is not None for r in records)
    columns = ["run"] + (["actual"] if with_actual else []) + ["predicted"]
    columns += [f"p_{c}" for c in classes]
    with_unusual = any(r.get("unusual") for r in records)
    if with_unusual:
        columns += ["unusual", "percentile", "unusual_features"]
    columns.append("model")
    with_why = any(r.get("explanation") for r in records)
    if with_why:
        columns.append("why")
    with_errors = any(r.get("error") for r in records)
    if with_errors:
        columns.append("error")
    rows = []
    for r in records:
        probabilities = r.get("probabilities") or {}
        row = [r.get("run_id")] + ([r.get("actual") or ""] if with_actual else [])
        candidates = [c["class"] for c in r.get("candidates") or ()]
        row.append(f"{r['predicted']} ({' or '.join(candidates)})" if candidates
                   else r.get("predicted") or "")
        row += [round(probabilities[c], 6) if c in probabilities else "" for c in classes]
        if with_unusual:
            unusual = r.get("unusual") or {}
            row += [unusual.get("unusual", ""), unusual.get("percentile", ""),
                    ", ".join(f"{f['feature']} ({f['z']:+.1f})"
                              for f in unusual.get("features") or ())]
        row.append(r.get("model"))
        if with_why:
            from ciml.explain import summary

            row.append(summary(r.get("explanation")))
        if with_errors:
            row.append(r.get("error") or "")
        rows.append(row)
    return columns, rows


def _local_run(path, build_name):
    path = pathlib.Path(path)
    # The path as given, so that several files predicted at once are told apart.
    return RunRecord(id=str(path), build_name=build_name, status=None,
                     artifacts_url=path.resolve().parent.as_uri() + "/", source="file",
                     metadata={"path": str(path)})


def load_run(ref, *, predictor, data_path=None, source=None, url_policy=None):
    """Find one run and its frame: a local file, a cached run, or the result source.

    A run found through the result source is fetched only if its artifacts
    URL passes ``url_policy`` (http and https by default).
    """
    from ciml.urlpolicy import DEFAULT_POLICY

    path = pathlib.Path(ref)
    if path.is_file():
        run = _local_run(path, predictor.build_name)
        data = path.read_bytes()
        return run, None, predictor.metric_source.parse(data, run)
    if data_path is not None:
        from ciml.cache import RawCache

        cache = RawCache(data_path)
        if cache.state(ref) == "cached":
            from ciml.human_labels import apply

            # A person's correction is the run's actual class here too.
            (run,), _ = apply(cache, [cache.record(ref)])
            # The arrays the dataset was built from, as the build reads them:
            # the same example bit for bit, and no DataFrame (nor pandas).
            return run, None, cache.series(ref)
    if source is None:
        raise NotFoundError(
            f"run {ref!r} is neither a file nor a cached run; give --source to look it up")
    run = source.get_run(ref)
    if data_path is not None:
        from ciml.cache import RawCache

        if RawCache(data_path).state(run.id) == "cached":
            return run, None, RawCache(data_path).frame(run.id)
    from ciml.collect import complete_run

    policy = url_policy or DEFAULT_POLICY
    policy.check(run.artifacts_url, "artifacts URL")
    run = complete_run(source, run)
    policy.check(run.artifacts_url, "artifacts URL")
    fetched, frame = predictor.metric_source.load(run)
    return run, fetched, frame


def load_series(source, run):
    """``(fetched, metrics)`` of a new run, as ``source.load(run)`` but as arrays where it can.

    A source that reads its format into arrays (dstat's
    :meth:`~ciml.base.MetricSource.parse_series`) spares the watcher a
    DataFrame per run, and the example is then made exactly as the build
    makes it from the raw cache (which stores those arrays).  A source
    that overrides ``load`` itself is asked through it.
    """
    from ciml.base import MetricSource
    from ciml.series import Series

    cls = type(source)
    if getattr(cls, "load", None) is not MetricSource.load \
            or getattr(cls, "parse_series", None) is MetricSource.parse_series:
        return source.load(run)
    fetched = source.stamp(source.fetch(run))
    stamps, values, columns = source.parse_series(fetched.data, run)
    return fetched, Series(stamps, values, list(columns))


def _as_frame(metrics):
    """A run's metrics as a DataFrame (a cached run's are a :class:`ciml.series.Series`)."""
    from ciml.series import Series

    if isinstance(metrics, Series):
        from ciml.cache import arrays_to_frame

        return arrays_to_frame(*metrics)
    return metrics


#: Runs a predict task on a Dask worker takes at once.
CLUSTER_BATCH = 32


def _cluster_predictor(data_path, dataset, experiment, unusual_percentile, build_name):
    from ciml.executor import data_path_key, worker_cached

    def load():
        predictor = Predictor.load(data_path, dataset, experiment,
                                   unusual_percentile=unusual_percentile)
        if build_name:
            predictor.build_name = build_name
        return predictor

    return worker_cached(("predict", data_path_key(data_path), dataset, experiment,
                          unusual_percentile, build_name), load)


def predict_batch(data_path, dataset, experiment, unusual_percentile, build_name, items):
    """A Dask task: prediction records for ``items``, in order.

    Each item is ``(ref, run, frame)``; a ``None`` run is a cached run
    read here from the shared raw cache (the common case: nothing but its
    id crosses the network).  The model is loaded once per worker process.
    """
    from ciml.cache import RawCache
    from ciml.executor import data_path_key, worker_cached
    from ciml.human_labels import apply

    predictor = _cluster_predictor(data_path, dataset, experiment, unusual_percentile,
                                   build_name)
    cache = worker_cached(("raw-cache", data_path_key(data_path)),
                          lambda: RawCache(data_path))
    records = []
    for ref, run, frame in items:
        try:
            if run is None:
                (run,), _ = apply(cache, [cache.record(ref)])
                frame = cache.frame(ref)
            records.append(predictor.record(run, frame))
        except CimlError as exc:
            records.append(predictor.error_record(exc, run=run, run_id=ref))
    return records


def _predict_on_cluster(cluster, data_path, loaded, predictor):
    """Records for ``loaded`` (as :func:`predict_runs` gathers them), predicted by workers."""
    args = (data_path, predictor.dataset_name, predictor.experiment_name,
            predictor.unusual_percentile, predictor.build_name)
    todo = [(i, (ref, run, frame)) for i, (ref, run, frame, error) in enumerate(loaded)
            if error is None]
    records = [None] * len(loaded)
    batches = [todo[k:k + CLUSTER_BATCH] for k in range(0, len(todo), CLUSTER_BATCH)]
    futures = [cluster.submit(predict_batch, *args, [item for _, item in batch])
               for batch in batches]
    for batch, future in zip(batches, futures):
        for (i, _), record in zip(batch, future.result()):
            records[i] = record
    for i, (ref, run, _frame, error) in enumerate(loaded):
        if error is not None:
            records[i] = predictor.error_record(error, run=run, run_id=ref)
    return records


def predict_runs(data_path, dataset, experiment, runs, *, source=None, predictor=None,
                 call_hook=True, url_policy=None, frames=None, cluster=None):
    """Predict each run; returns one prediction record per run, in order.

    A run that cannot be predicted gives a record with ``error`` rather than
    an exception, so that one bad run does not hide the others.  Every
    run's metrics are read before the model is used, so a broken input file
    is refused without loading the estimator (and, when no run is left,
    the estimator is never loaded).  ``frames``, a list, receives each
    run's metrics frame (``None`` where none was read), in order, for a
    caller that uses them again (``predict --plot``) without a second fetch.

    With ``cluster`` (a :class:`ciml.executor.Cluster`) the Dask workers
    load the model and predict, :data:`CLUSTER_BATCH` runs a task; cached
    runs are read by the workers from the shared data path, other runs
    (files, runs found through ``source``) are read here and sent.  The
    records are the same as without it, in the same order.
    """
    from ciml.plugins import get_manager

    predictor = predictor or Predictor.load(data_path, dataset, experiment, lazy=True)
    loaded = []
    cache = None
    if cluster is not None:
        from ciml.cache import RawCache

        cache = RawCache(data_path)
    for ref in runs:
        run = None
        if cache is not None and not pathlib.Path(ref).is_file() \
                and cache.state(ref) == "cached":
            # Read by the worker from the shared cache: only the id travels.
            loaded.append((ref, None, None, None))
            continue
        try:
            run, _fetched, frame = load_run(ref, predictor=predictor, data_path=data_path,
                                            source=source, url_policy=url_policy)
            loaded.append((ref, run, frame, None))
        except CimlError as exc:
            LOG.debug("cannot read run %s", ref, exc_info=True)
            loaded.append((ref, run, None, exc))
    if frames is not None:
        frames.extend(_as_frame(frame) for _, _, frame, _ in loaded)
    if cluster is not None:
        cache.close()
        records = _predict_on_cluster(cluster, data_path, loaded, predictor)
        if call_hook:
            for record in records:
                get_manager().call_lifecycle("ciml_prediction_made", prediction=record)
        return records
    if any(error is None for *_, error in loaded):
        predictor.model  # noqa: B018 -- a model that cannot load fails the command, not a run
    records = []
    for ref, run, frame, error in loaded:
        if error is None:
            try:
                record = predictor.record(run, frame)
            except CimlError as exc:
                LOG.debug("cannot predict %s", ref, exc_info=True)
                error = exc
        if error is not None:
            record = predictor.error_record(error, run=run, run_id=ref)
        records.append(record)
        if call_hook:
            get_manager().call_lifecycle("ciml_prediction_made", prediction=record)
    return records


# -- ciml watch ----------------------------------------------------------------

#: What :meth:`Watcher.process` did with an event: the run's record was
#: emitted (or the run is not the watcher's to predict), or it was dropped
#: because the watcher is stopping, and so must be delivered again.
SETTLED, DROPPED = "settled", "dropped"


class Watcher:
    """Turns a trigger's events into predictions, with a bounded queue and a worker pool.

    An event is *settled* -- :meth:`ciml.base.Trigger.acknowledge` is called
    for it -- only once its record (a prediction or an error) was emitted, or
    once it was found not to be the watcher's (another job, a repeat).  An
    event still queued or being fetched when the watcher stops is never
    acknowledged: the broker's persistent session or the poll cursor hands
    it over again next time.

    :param predictor: a :class:`Predictor`.
    :param trigger: a set-up :class:`ciml.base.Trigger`.
    :param source: the result source, or ``None`` (then events must carry
        an artifacts URL, as Zuul reports do).
    :param data_path: needed by ``learn``.
    :param learn: add finished, labelled runs to the raw cache.
    :param max_events: stop after this many events about the build name
        were taken (the queued ones are still finished).
    :param fetch_attempts: tries to resolve a run and fetch its metrics.
    :param fetch_delay: seconds between tries (doubling, at most 8 times).
    :param drain_timeout: on SIGTERM/SIGINT, seconds to finish the runs in
        hand before dropping the rest (unacknowledged); a second signal
        drops them at once.
    :param url_policy: the :class:`ciml.urlpolicy.UrlPolicy` every artifacts
        URL must pass before anything is fetched from it.
    """

    def __init__(self, predictor, trigger, *, source=None, data_path=None, learn=False,
                 max_events=None, workers=4, queue_size=100, fetch_attempts=6,
                 fetch_delay=5.0, status_interval=60.0, stdout=None, stderr=None,
                 call_hook=True, handle_signals=True, dedup_size=10000, drain_timeout=30.0,
                 url_policy=None):
        if workers < 1:
            raise CimlError("--workers must be at least 1")
        if queue_size < 1:
            raise CimlError("--queue-size must be at least 1")
        if drain_timeout is not None and drain_timeout < 0:
            raise CimlError("--drain-timeout must not be negative")
        from ciml.urlpolicy import DEFAULT_POLICY

        self.predictor = predictor
        self.trigger = trigger
        self.source = source
        self.data_path = data_path
        self.learn = learn
        self.max_events = max_events
        self.workers = workers
        self.queue = queue.Queue(maxsize=queue_size)
        self.fetch_attempts = max(1, fetch_attempts)
        self.fetch_delay = max(0.0, fetch_delay)
        self.status_interval = status_interval
        self.stdout = stdout
        self.stderr = stderr
        self.call_hook = call_hook
        self.handle_signals = handle_signals
        self.drain_timeout = drain_timeout
        self.url_policy = url_policy or DEFAULT_POLICY
        self.build_name = predictor.build_name
        self.stats = collections.Counter()
        self._stats_lock = threading.Lock()
        self._out_lock = threading.Lock()
        self._source_lock = threading.Lock()
        # Keys of runs whose record was emitted (a repeat is settled at once),
        # and of runs in hand with every event that announced them (a repeat
        # is settled with the first, never before it).
        self._events_lock = threading.Lock()
        self._recent = collections.OrderedDict()
        self._in_hand = {}
        self._dedup_size = dedup_size
        self._taking = True
        self._abort = False
        self._drain_deadline = None
        self._done = threading.Event()
        self._threads = []
        self._cache = None

    # -- counters ------------------------------------------------------------

    def _count(self, key, n=1):
        with self._stats_lock:
            self.stats[key] += n

    def status_line(self):
        with self._stats_lock:
            s = dict(self.stats)
        trigger_stats = getattr(self.trigger, "stats", {}) or {}
        parts = [f"seen {s.get('seen', 0)}", f"predicted {s.get('predicted', 0)}",
                 f"failed {s.get('failed', 0)}",
                 f"skipped {s.get('ignored', 0) + s.get('skipped', 0) + s.get('duplicate', 0)}",
                 f"malformed {trigger_stats.get('malformed', 0)}",
                 f"queue {self.queue.qsize()}/{self.queue.maxsize}"]
        if s.get("unusual"):
            parts.append(f"unusual {s['unusual']}")
        if s.get("learned"):
            parts.append(f"learned {s['learned']}")
        if s.get("dropped"):
            parts.append(f"left for redelivery {s['dropped']}")
        return "ciml watch: " + ", ".join(parts)

    def _write_status(self):
        stream = self.stderr or sys.stderr
        try:
            stream.write(self.status_line() + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass

    # -- the trigger side ----------------------------------------------------

    def _event_key(self, event):
        return event.run_id or event.build_uuid

    def _acknowledge(self, event):
        try:
            self.trigger.acknowledge(event)
        except Exception:  # a trigger's bug must not stop the others' runs
            LOG.exception("the %s trigger failed to acknowledge run %s",
                          getattr(self.trigger, "name", "?"), self._event_key(event))

    def _settle(self, key, outcome):
        """Done with the run ``key``: acknowledge its events unless it was dropped."""
        with self._events_lock:
            events = self._in_hand.pop(key, [])
            if outcome == SETTLED:
                self._recent[key] = True
                self._recent.move_to_end(key)
                while len(self._recent) > self._dedup_size:
                    self._recent.popitem(last=False)
        if outcome == SETTLED:
            for event in events:
                self._acknowledge(event)

    def on_event(self, event):
        """Take one event from the trigger; False when it was refused (stopping).

        Called on the thread that runs the trigger; it waits while the queue
        is full (that wait is the back-pressure), so a trigger whose events
        come from a network library's thread hands them to its own thread
        first (the mqtt trigger does).
        """
        if not self._taking:
            return False  # not acknowledged: a persistent session delivers it next time
        self._count("seen")
        if event.build_name is not None and self.build_name and \
                event.build_name != self.build_name:
            self._count("ignored")
            LOG.debug("ignoring %s: job %s, watching %s", self._event_key(event),
                      event.build_name, self.build_name)
            self._acknowledge(event)
            return True
        if event.build_name is None and self.source is None:
            self._count("skipped")
            LOG.warning("skipping run %s: the event names no job and there is no result "
                        "source (--source) to ask", self._event_key(event))
            self._acknowledge(event)
            return True
        key = self._event_key(event)
        if key is None:
            self._count("skipped")
            LOG.warning("skipping an event that names no run: %r", event.payload)
            self._acknowledge(event)
            return True
        with self._events_lock:
            repeat_in_hand = key in self._in_hand
            if repeat_in_hand:
                # Settled with the first report: acknowledging it now would
                # lose the run if the watcher stopped before the first is done.
                self._in_hand[key].append(event)
            elif key not in self._recent:
                self._in_hand[key] = [event]
        if repeat_in_hand or key in self._recent:
            # QoS 1 is at-least-once: a redelivered report is predicted once.
            self._count("duplicate")
            LOG.info("skipping a repeated report of run %s", key)
            if not repeat_in_hand:
                self._acknowledge(event)
            return True
        item = (key, event, time.monotonic())
        while True:
            if not self._taking:
                with self._events_lock:
                    self._in_hand.pop(key, None)
                return False
            try:
                self.queue.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        self._count("queued")
        if self.max_events and self.stats["queued"] >= self.max_events:
            self.stop(drain=True)
        return True

    def stop(self, drain=False, timeout=None):
        """Stop taking events.

        ``drain`` finishes the runs in hand (within ``timeout`` seconds, if
        given); otherwise, or once the time is up, the runs still queued or
        waiting are dropped unacknowledged.  Safe in a signal handler: it
        only sets flags.
        """
        self._taking = False
        if not drain:
            self._abort = True
        elif timeout is not None and self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + timeout
        self.trigger.stop()

    # -- the worker side -----------------------------------------------------

    def _sleep(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._abort:
                raise Interrupted()
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _retrying(self, what, func, retry_if):
        delay = self.fetch_delay
        for attempt in range(1, self.fetch_attempts + 1):
            if self._abort:
                raise Interrupted()
            try:
                return func()
            except CimlError as exc:
                if attempt >= self.fetch_attempts or not retry_if(exc):
                    raise
                LOG.info("%s failed (attempt %d of %d): %s; retrying in %.1f s", what,
                         attempt, self.fetch_attempts, exc, delay)
                self._count("retries")
                self._sleep(delay)
                delay = min(delay * 2, self.fetch_delay * 2 ** 8) if delay else delay

    def resolve(self, event):
        """The :class:`RunRecord` an event announces."""
        if isinstance(event.payload, RunRecord):
            return event.payload
        if self.source is not None:
            ident = event.run_id or event.build_uuid

            def get():
                with self._source_lock:
                    return self.source.get_run(ident)

            # The result may reach the database after the report (NotFound),
            # or the database may be restarting (transient SourceError).
            run = self._retrying(
                f"looking up run {ident}", get,
                lambda e: isinstance(e, NotFoundError) or getattr(e, "transient", False)
                or isinstance(e, SourceError))
            if not run.artifacts_url and event.artifacts_url:
                run.artifacts_url = event.artifacts_url
            return run
        if not event.artifacts_url:
            raise CimlError(f"run {self._event_key(event)}: the event has no artifacts URL "
                            "and there is no result source (--source) to look it up")
        return RunRecord(
            id=event.run_id or event.build_uuid, build_name=event.build_name,
            status=event.status, artifacts_url=event.artifacts_url,
            build_uuid=event.build_uuid, start=event.start,
            result=(event.metadata or {}).get("result"), source=event.trigger,
            metadata={k: str(v) for k, v in (event.metadata or {}).items()
                      if isinstance(v, (str, int, float, bool))})

    def fetch(self, run):
        source = self.predictor.metric_source
        return self._retrying(
            f"fetching the metrics of run {run.id}", lambda: load_series(source, run),
            lambda e: isinstance(e, MetricsUnavailable)
            and (e.transient or e.reason in RETRY_REASONS))

    def process(self, event):
        """Handle one event end to end: :data:`SETTLED` or :data:`DROPPED`."""
        run = None
        fetched = frame = None
        try:
            run = self.resolve(event)
            if self.build_name and run.build_name != self.build_name:
                self._count("ignored")
                return SETTLED
            # Before anything is fetched from it, the Zuul inventory included.
            self.url_policy.check(run.artifacts_url, "artifacts URL")
            if self.source is not None:
                from ciml.collect import complete_run

                # The metadata a label may need (the node provider), and
                # what the report shows; never a reason to fail the run.
                run = complete_run(self.source, run)
                self.url_policy.check(run.artifacts_url, "artifacts URL")
            fetched, frame = self.fetch(run)
            record = self.predictor.record(run, frame, event)
        except Interrupted:
            self._count("dropped")
            LOG.warning("left run %s for redelivery: stopping",
                        run.id if run else self._event_key(event))
            return DROPPED
        except Exception as exc:
            if not isinstance(exc, CimlError):
                LOG.exception("unexpected error predicting run %s", self._event_key(event))
            record = self.predictor.error_record(exc, run=run, event=event)
            self._count("failed")
            self.report(record)
            if self.learn and run is not None and isinstance(exc, MetricsUnavailable) \
                    and not exc.transient:
                self._mark_unavailable(run, exc)
            return SETTLED
        self._count("predicted")
        if (record.get("unusual") or {}).get("unusual"):
            self._count("unusual")
        self.report(record)
        if self.learn:
            self._learn(run, fetched, frame)
        return SETTLED

    def report(self, record):
        """Emit one record: a JSON line on stdout, then every ``ciml_prediction_made`` plugin."""
        line = json.dumps(record, sort_keys=True, default=str)
        with self._out_lock:
            stream = self.stdout or sys.stdout
            stream.write(line + "\n")
            stream.flush()
        if self.call_hook:
            from ciml.plugins import get_manager

            get_manager().call_lifecycle("ciml_prediction_made", prediction=record)

    def _raw_cache(self):
        if self._cache is None:
            from ciml.cache import RawCache

            self._cache = RawCache(self.data_path)
        return self._cache

    def _learn(self, run, fetched, frame):
        if fetched is None or run.status not in (PASSED, FAILED):
            return
        try:
            if self.predictor.label_of(run) is None:
                return
            cache = self._raw_cache()
            if cache.state(run.id) == "cached":
                return
            fetched = self.predictor.stamp(fetched)
            cache.store(run, fetched, frame)
        except Exception:
            LOG.exception("could not add run %s to the raw cache", run.id)
            return
        self._count("learned")
        from ciml.plugins import get_manager

        get_manager().call_lifecycle("ciml_run_cached", run=run, data_path=self.data_path)

    def _mark_unavailable(self, run, exc):
        try:
            cache = self._raw_cache()
            if cache.state(run.id) is None:
                cache.mark_unavailable(run, exc.reason, str(exc))
        except Exception:
            LOG.exception("could not record run %s as unavailable", run.id)

    def _worker(self):
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                if item is None:
                    return
                key, event, _queued_at = item
                outcome = DROPPED
                try:
                    if self._abort:
                        self._count("dropped")
                        LOG.warning("left queued run %s for redelivery: stopping", key)
                    else:
                        outcome = self.process(event)
                finally:
                    self._settle(key, outcome)
            except Exception:  # process() reports its errors; this is a last guard
                LOG.exception("worker error")
            finally:
                self.queue.task_done()

    def _status_loop(self):
        while not self._done.wait(self.status_interval):
            self._write_status()

    # -- running -------------------------------------------------------------

    def _install_signals(self):
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum, frame):
            name = signal.Signals(signum).name
            if self._taking and self.drain_timeout:
                # Only flags are set here: logging from a signal handler could
                # deadlock on a lock the interrupted code holds.
                self._signalled = (name, True)
                self.stop(drain=True, timeout=self.drain_timeout)
            else:
                self._signalled = (name, False)
                self.stop(drain=False)

        self._signalled = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    def _log_signal(self):
        signalled, self._signalled = getattr(self, "_signalled", None), None
        if signalled is None:
            return
        name, drain = signalled
        if drain:
            LOG.warning("received %s: finishing the runs in hand (at most %.0f s); the rest "
                        "stay unacknowledged and are delivered again at the next start",
                        name, self.drain_timeout)
        else:
            LOG.warning("received %s: stopping now; the runs in hand stay unacknowledged "
                        "and are delivered again at the next start", name)

    def _wait_workers(self):
        for thread in self._threads:
            # Short joins keep the main thread responsive to signals, and
            # let it end the drain when its time is up.
            while thread.is_alive():
                thread.join(0.1)
                self._log_signal()
                if self._drain_deadline is not None and not self._abort and \
                        time.monotonic() > self._drain_deadline:
                    LOG.warning("--drain-timeout of %.0f s reached: leaving %d queued "
                                "run(s) and the runs still waiting for redelivery",
                                self.drain_timeout or 0, self.queue.qsize())
                    self._abort = True

    def run(self):
        """Watch until stopped; returns the counters as a dict."""
        previous = self._install_signals()
        try:
            for i in range(self.workers):
                thread = threading.Thread(target=self._worker, name=f"ciml-watch-{i}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)
            if self.status_interval and self.status_interval > 0:
                status = threading.Thread(target=self._status_loop, name="ciml-watch-status",
                                          daemon=True)
                status.start()
            LOG.info("watching for runs of %s with model %s", self.build_name,
                     self.predictor.model_name)
            try:
                self.trigger.run(self.on_event)
            finally:
                # The trigger is done (stopped, or had nothing more to say).
                self._taking = False
                self._log_signal()
                for _ in self._threads:
                    self._put_sentinel()
                self._wait_workers()
                self._log_signal()
        finally:
            self._done.set()
            for sig, old in previous.items():
                signal.signal(sig, old)
            try:
                # After the workers: the acknowledgements of the drained runs
                # must reach the broker (or the cursor) before it lets go.
                self.trigger.close()
            except Exception:
                LOG.exception("the %s trigger failed to close",
                              getattr(self.trigger, "name", "?"))
            if self._cache is not None:
                self._cache.close()
            if self.status_interval:
                self._write_status()
        return dict(self.stats)

    def _put_sentinel(self):
        while True:
            try:
                self.queue.put(None, timeout=0.1)
                return
            except queue.Full:
                self._log_signal()
                if self._drain_deadline is not None and not self._abort and \
                        time.monotonic() > self._drain_deadline:
                    self._abort = True
                if not any(t.is_alive() for t in self._threads):
                    return

"""cache-data on a Dask cluster: runs go to the workers in batches.

One task per run cost the scheduler about 10 ms of CPU and the client
about 8 ms (measured by ``benchmarks/bench_scale.py``), which capped one
``cache-data`` near 100 runs/s however many workers it had.  A task here
carries a batch of runs instead, whose size grows with the runs already
handed out (:func:`batch_size`): a small history still spreads over every
worker thread at once, a large one pays the task's overhead once per
:data:`MAX_BATCH` runs.

What does not change with batching:

* progress counts runs: a worker sends the ids it finished, at most every
  :data:`PROGRESS_EVERY_S`, as Dask events the client's bar listens to;
  each batch's verdicts then count every run exactly once;
* a worker that dies mid-batch loses nothing: the scheduler runs the
  batch again elsewhere, each run is stored atomically, and a run the dead
  worker stored before it could answer is found stored *by this command*
  (its record's ``cache.writer`` is this command's token) and counted
  cached, not ``skipped_cached`` as if another command had stored it, and
  is not fetched again.
"""

import collections
import threading
import time
import uuid

from ciml.cache import CACHED
from ciml.collect import (
    ALREADY_CACHED,
    _CacheJob,
    _error_verdict,
    _outcome_of,
    _parse_store_verdict,
    _registered_class,
    _Result,
    _verdict_result,
    complete_run,
)

#: The most runs one task carries: at ~18 ms of scheduler and client CPU a
#: task, 64 runs make it 0.3 ms a run; a retried batch refetches nothing it
#: stored, so a lost worker costs at most the run it was on.
MAX_BATCH = 64

#: How many batches each worker thread should get over the runs handed out
#: so far, before batches grow: the spread that keeps every thread busy
#: to the end of a small history.
BATCHES_PER_THREAD = 4

#: Seconds between two progress events of one task.
PROGRESS_EVERY_S = 0.5


def batch_size(handed_out, threads, left=None):
    """How many runs the next task carries, ``handed_out`` runs after the start.

    One run a task at first, then growing so that the runs handed out so
    far made :data:`BATCHES_PER_THREAD` batches per worker thread, up to
    :data:`MAX_BATCH`: with 2 threads, 1 run a task for the first 16 runs,
    8 after 64, the full 64 after 512.  When the runs still to come are
    known to be at most ``left`` (``--limit``), batches shrink again
    towards the end, to half a thread's share of them, so that no worker
    is left alone with a full batch while the others idle.
    """
    threads = max(1, threads)
    size = min(MAX_BATCH, handed_out // (BATCHES_PER_THREAD * threads))
    if left is not None:
        size = min(size, left // (2 * threads))
    return max(1, size)


class _Batch(collections.namedtuple("_Batch", "number results")):
    """The :class:`~ciml.collect._Result` of each run of batch ``number``."""


# -- on a worker ---------------------------------------------------------------


def _stored_by(cache, run_id, writer):
    """``True`` if ``writer`` stored the run, ``False`` if someone else did,
    ``None`` if it is not cached."""
    if cache.state(run_id) != CACHED:
        return None
    try:
        return cache.info(run_id).get("writer") == writer
    except Exception:  # removed meanwhile
        return None


def _fetch_store(metric_source, cache, run, writer):
    """Fetch, validate, parse and store one run: its verdict
    (:func:`ciml.collect._parse_store_verdict`)."""
    # A retried batch: what the dead worker stored is done, not refetched.
    mine = _stored_by(cache, run.id, writer)
    if mine is not None:
        return None if mine else ALREADY_CACHED
    try:
        fetched = metric_source.stamp(metric_source.fetch(run))
    except Exception as exc:
        return _error_verdict(exc)
    verdict = _parse_store_verdict(metric_source, cache, run, fetched, writer=writer)
    if verdict == ALREADY_CACHED and _stored_by(cache, run.id, writer):
        # The same batch ran twice at once (a worker the scheduler thought
        # dead was only slow): the other try stored it for this command.
        return None
    return verdict


def _progress_sender(topic, number):
    """A function of a finished run id that sends the ids as Dask events, throttled."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a Dask worker (a test calling it here)
        return lambda run_id: None
    ids, last = [], [time.monotonic()]

    def send(run_id):
        ids.append(run_id)
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S:
            worker.log_event(topic, {"batch": number, "runs": list(ids)})
            ids.clear()
            last[0] = now

    return send


def fetch_store_batch(runs, metric_cls, metric_params, data_path, writer, topic=None,
                      number=None):
    """A Dask task: fetch, validate, parse and store ``runs`` on a worker.

    Returns one verdict per run, in order.  The worker builds the metric
    source and opens the raw cache once per process
    (:func:`ciml.executor.worker_cached`).  Storing is atomic, so a worker
    killed half way leaves nothing that reads as data.
    """
    from ciml.cache import RawCache
    from ciml.executor import data_path_key, worker_cached

    key = ("cache-data", metric_cls, repr(sorted(metric_params.items())),
           data_path_key(data_path))
    metric_source, cache = worker_cached(
        key, lambda: (metric_cls(**metric_params), RawCache(data_path)))
    progress = _progress_sender(topic, number) if topic else (lambda run_id: None)
    verdicts = []
    for run in runs:
        verdicts.append(_fetch_store(metric_source, cache, run, writer))
        progress(run.id)
    return verdicts


# -- on the client ---------------------------------------------------------------


def _run_batch(cache, source, runs, number, stop, cluster, spec):
    """Complete a batch's runs here, then have a worker fetch, parse and store them.

    Runs in one of the job's threads, which waits for the task: the threads
    bound the batches on the cluster at once.  A worker that dies is the
    scheduler's to handle (it runs the batch again elsewhere); only a batch
    that failed on every try (:class:`distributed.KilledWorker`) comes back
    as an error, for each of its runs, counted as transient so that the
    next cache-data tries them again.
    """
    if stop.is_set():
        return _Batch(number, [_Result("cancelled", None, None, run) for run in runs])
    runs = [complete_run(source, run) for run in runs]
    future = cluster.submit(fetch_store_batch, runs, *spec, number)
    try:
        verdicts = future.result()
    except Exception as exc:
        if stop.is_set() or future.cancelled():
            return _Batch(number, [_Result("cancelled", None, None, run) for run in runs])
        return _Batch(number, [_Result(*_outcome_of(cache, run, exc), run) for run in runs])
    return _Batch(number, [_verdict_result(cache, run, verdict)
                           for run, verdict in zip(runs, verdicts)])


class DaskCacheJob(_CacheJob):
    """A :class:`ciml.collect._CacheJob` whose runs are fetched, parsed and
    stored by Dask workers, :func:`batch_size` runs a task."""

    def __init__(self, data_path, source, metric_source, build_name, *, cluster, **kwargs):
        super().__init__(data_path, source, metric_source, build_name, cluster=cluster,
                         **kwargs)
        self.limit = kwargs.get("limit")
        self.writer = f"cache-data@{uuid.uuid4().hex}"
        # Progress events only when a bar shows them.
        self.topic = f"ciml-{self.writer}" if self.bar is not None else None
        # The workers build the metric source from its class and options.
        self.spec = (_registered_class(metric_source),
                     metric_source.get_params(include_secrets=True), data_path,
                     self.writer, self.topic)
        self.threads = cluster.threads()
        self.batch = []
        self.batches = 0
        # {batch number: ids its worker said are done}, for batches in flight only.
        self.shown = {}
        self.lock = threading.RLock()
        self._quiet_tick = False
        if self.topic is not None:
            cluster.client.subscribe_topic(self.topic, self._progress)

    def submit(self, run):
        """Add one run to the batch; hand the batch out once it is full."""
        self.batch.append(run)
        left = self.limit - self.counts["selected"] if self.limit else None
        if len(self.batch) >= batch_size(self.counts["submitted"], self.threads, left):
            self.flush()

    def flush(self):
        """Hand the runs batched so far to the cluster."""
        if not self.batch:
            return
        runs, self.batch = self.batch, []
        self.counts["submitted"] += len(runs)
        self.batches += 1
        with self.lock:
            self.shown[self.batches] = set()
        self._submit(_run_batch, self.cache, self.source, runs, self.batches, self.stop,
                     self.cluster, self.spec)

    def wait(self, return_when=None, quiet=False):
        import concurrent.futures as cf

        if return_when in (None, cf.ALL_COMPLETED):
            # Waiting for everything: the listing is over, the last batch goes too.
            self.flush()
            return_when = cf.ALL_COMPLETED
        super().wait(return_when, quiet=quiet)

    # -- progress ------------------------------------------------------------------

    def _progress(self, event):
        """A worker's event (on the client's event loop): its finished runs on the bar."""
        _, message = event
        with self.lock:
            shown = self.shown.get(message.get("batch"))
            if shown is None:  # the batch's verdicts are in: counted already
                return
            new = [run_id for run_id in message.get("runs", ()) if run_id not in shown]
            shown.update(new)
            if new:
                self.bar.update(len(new))

    def collect(self, done):
        for future in done:
            outcome = self._result(future)
            if not isinstance(outcome, _Batch):
                if outcome is not None:
                    self._record(outcome)
                continue
            with self.lock:
                shown = self.shown.pop(outcome.number, set())
                for result in outcome.results:
                    # A run a progress event put on the bar is counted, not moved again.
                    self._quiet_tick = result.run.id in shown
                    self._record(result)
                self._quiet_tick = False
        self._tick(0)

    def _tick(self, n):
        with self.lock:
            super()._tick(0 if self._quiet_tick else n)

    def cancel(self):
        self.batch = []
        super().cancel()

    def close(self):
        if self.topic is not None:
            try:
                self.cluster.client.unsubscribe_topic(self.topic)
            except Exception:  # the scheduler is gone
                pass
        super().close()

    def report(self):
        summary = super().report()
        summary["batches"] = self.batches
        return summary


def expected_tasks(runs, threads, limit=None):
    """How many tasks :class:`DaskCacheJob` submits for ``runs`` fresh runs (for tests)."""
    handed, tasks = 0, 0
    while handed < runs:
        # The run that fills a batch is counted selected before the check.
        size = 1
        while (handed + size < runs and size < batch_size(
                handed, threads, None if limit is None else limit - handed - size)):
            size += 1
        handed += size
        tasks += 1
    return tasks



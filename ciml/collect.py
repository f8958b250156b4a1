"""The cache-data stage: list a job's runs, fetch and validate their metrics, cache them.

Runs are listed on the calling thread (sources need not be thread-safe)
and fetched by a pool of worker threads: fetching is network-bound, so K
workers give close to K times the throughput of one.  At most a small
multiple of K runs are in flight at any time, so memory does not grow with
the number of runs listed.

A run is recorded as cached only after its file parsed; a file that does
not is recorded as unavailable with the metric source's reason, and later
runs skip it (``retry_unavailable`` tries again).  Transient failures (a
500, a dropped connection) are counted but not recorded, so the next run
tries them again.  Storing is atomic (:class:`ciml.cache.RawCache`), so an
interruption at any moment loses at most the runs in flight.
"""

import collections
import concurrent.futures as cf
import logging
import os
import threading
import time

from ciml.cache import CACHED, UNAVAILABLE, NotCommitted, RawCache
from ciml.errors import CimlError, MetricsUnavailable, SourceError

LOG = logging.getLogger(__name__)

DEFAULT_WORKERS = 8

# How many runs may wait per worker: enough to keep every worker busy while
# the main thread lists more, small enough that memory stays flat.
_WINDOW_PER_WORKER = 2


def _outcome_of(cache, run, exc):
    """Record (or not) a failure; returns ``(outcome, reason, message)``."""
    if isinstance(exc, MetricsUnavailable):
        if exc.transient:
            return "transient", exc.reason, str(exc)
        cache.mark_unavailable(run, exc.reason, str(exc))
        return UNAVAILABLE, exc.reason, str(exc)
    if isinstance(exc, CimlError):
        if getattr(exc, "transient", False):
            return "transient", "error", str(exc)
        cache.mark_unavailable(run, "error", str(exc))
        return UNAVAILABLE, "error", str(exc)
    # A plugin bug must not lose the runs around it, nor be recorded as a
    # fact about the file: the run is tried again next time.
    LOG.warning("run %s: %s: %s", run.id, type(exc).__name__, exc)
    return "transient", "error", f"{type(exc).__name__}: {exc}"


# -- parsing and storing in worker processes -----------------------------------
#
# Fetching is I/O and scales with threads; parsing and storing are CPU work
# that holds the GIL, so with many workers one core caps the rate.  With
# ``processes > 0`` the fetching threads hand each file to a pool of
# processes that parse it and store the run (folder and index) themselves:
# only a short verdict comes back, never the parsed frame, whose unpickling
# would again hold the fetching process's GIL.  By default the pool starts
# only once a job proves big enough to repay the start of the processes
# (about a second each).

_PROCESS = {}


def _init_process(cls, metric_params, data_root, owner_pid, environ):
    import signal

    from ciml import procutil
    from ciml.paths import DataPath

    # Workers fork from the fork server, which keeps the environment of the
    # first command that started one in this process: the storage
    # credentials (AWS_*) and settings (CIML_*) are this command's.
    os.environ.clear()
    os.environ.update(environ)
    procutil.die_with_parent(owner_pid)
    # Ctrl-C is the parent's to handle: it stops handing out work.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _PROCESS["metrics"] = cls(**metric_params)
    # A DataPath (its storage options and catalog with it), or an old root.
    _PROCESS["cache"] = RawCache(data_root if isinstance(data_root, DataPath)
                                 else DataPath(data_root))


def _parse(metric_source, run, fetched):
    """The run's series ``(timestamps, values, columns)``; an empty one is unavailable,
    like a file that is not there.

    Arrays, not a frame: what the cache stores, without a DataFrame's round
    trip (:meth:`ciml.base.MetricSource.parse_series`).
    """
    parse_series = getattr(metric_source, "parse_series", None)
    if parse_series is None:  # a metric source written before parse_series
        frame = metric_source.parse(fetched.data, run)
        if frame is None or len(frame) == 0:
            raise MetricsUnavailable("empty", f"run {run.id}: no samples")
        return frame
    series = parse_series(fetched.data, run)
    if series is None or len(series[0]) == 0:
        raise MetricsUnavailable("empty", f"run {run.id}: no samples")
    return series


def _process_ready():
    return os.getpid()


#: The outcome of a run that another process cached while this one fetched it.
ALREADY_CACHED = "already-cached"


def _error_verdict(exc):
    """A parse or fetch failure as a plain tuple ``(kind, reason, message, transient)``.

    Errors travel between processes as plain tuples: ciml's exceptions take
    keyword-only details that pickling would lose.
    """
    if isinstance(exc, MetricsUnavailable):
        return ("unavailable", exc.reason, str(exc), exc.transient)
    if isinstance(exc, CimlError):
        return ("ciml", "error", str(exc), getattr(exc, "transient", False))
    return ("bug", "error", f"{type(exc).__name__}: {exc}", True)


def _parse_store_verdict(metric_source, cache, run, fetched, commit_if=None, writer=None):
    """Parse and store one run away from the job's process: ``None`` (stored),
    :data:`ALREADY_CACHED` or an error tuple (:func:`_error_verdict`)."""
    try:
        series = _parse(metric_source, run, fetched)
    except Exception as exc:
        return _error_verdict(exc)
    try:
        stored = cache.store(run, fetched, series, commit_if=commit_if, writer=writer)
    except NotCommitted:
        raise
    except Exception as exc:
        return ("store", "error", f"{type(exc).__name__}: {exc}", True)
    return None if stored else ALREADY_CACHED


def _process_parse_store(run, fetched):
    """Parse and store one run in a worker process (see :func:`_parse_store_verdict`)."""
    from ciml import procutil

    try:
        return _parse_store_verdict(_PROCESS["metrics"], _PROCESS["cache"], run, fetched,
                                    commit_if=procutil.owner_alive)
    except NotCommitted:
        # Whoever asked for this run is gone: nothing of it may be indexed.
        os._exit(1)


class _StoreFailed(CimlError):
    """Storing a run failed in a worker process."""


def _registered_class(metric_source):
    """The registered class a worker process builds ``metric_source`` from, or ``None``."""
    from ciml.plugins import get_manager

    info = get_manager().registry["metric_source"].get(metric_source.name)
    if info is not None and type(metric_source) in (info.cls, *info.cls.__bases__):
        return info.cls
    return None


def _rebuildable(metric_source):
    """Whether a worker process can build the same metric source by its name."""
    return _registered_class(metric_source) is not None


def _process_pool(processes, metric_source, data_root):
    import multiprocessing

    cls = _registered_class(metric_source)
    # forkserver: forking a process that runs threads can copy held locks.
    # What every worker needs is imported once, in the fork server, so that
    # a worker starts in milliseconds instead of a second of imports; the
    # class travels by reference, so no worker scans the plugin entry points.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["ciml.collect", "ciml.cache", "ciml.procutil", "pandas",
                                cls.__module__])
    return cf.ProcessPoolExecutor(
        max_workers=processes, mp_context=ctx, initializer=_init_process,
        initargs=(cls, metric_source.get_params(include_secrets=True), data_root,
                  os.getpid(), dict(os.environ)))


class _ParsePool:
    """A job's parse processes: started on demand, used once they answer."""

    def __init__(self, processes, metric_source, data_root):
        self.processes = processes
        self._metric_source = metric_source
        self._data_root = data_root
        self.executor = None
        self._ready = threading.Event()

    def start(self):
        if not self.processes or self.executor is not None:
            return
        self.executor = _process_pool(self.processes, self._metric_source, self._data_root)
        # Starting a process takes about a second (imports): the threads go
        # on parsing themselves until the processes answer, instead of all
        # waiting on a pool that is not there yet.
        warmups = [self.executor.submit(_process_ready) for _ in range(self.processes)]

        def answered(_):
            if all(f.done() for f in warmups):
                self._ready.set()

        for future in warmups:
            future.add_done_callback(answered)

    def get(self):
        """The executor once every process has answered; ``None``: parse here."""
        return self.executor if self._ready.is_set() else None

    def failed(self):
        """The processes died: parse in the threads from now on."""
        if self._ready.is_set():
            self._ready.clear()
            LOG.warning("parse processes failed; parsing in threads")

    def shutdown(self, wait=True, cancel_futures=False):
        if self.executor is not None:
            self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)


#: Runs handed to the workers before the automatic process pool starts.
AUTO_PROCESSES_AFTER = 16


def auto_processes(workers, metric_source=None):
    """How many parse processes ``processes=None`` means for this many workers.

    None on one core.  Otherwise all cores but one, the fetching threads'
    (at most 8, at most one per worker), and one on two cores: parsing and
    packing a file (:mod:`ciml.rawpack`) in the threads keeps cache-data on
    one core, the GIL's.  Measured with ``benchmarks/bench_cache_data.py`` on
    two idle cores (fetched files packed): 68-73 % of the latency bound in
    threads, 82-90 % with one process (235 and 2,000 runs), at no more CPU
    per run.  Before packing, processes cost more CPU than they saved there.
    """
    if metric_source is not None and not _rebuildable(metric_source):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    if workers < 4 or cores < 2:
        return 0
    return min(cores - 1, 8, workers)


class _Result(collections.namedtuple("_Result", "outcome reason message run")):
    """What became of one run: ``cached``, ``unavailable``, ``transient``, ``cancelled``
    or :data:`ALREADY_CACHED`."""


class _Handoff(collections.namedtuple("_Handoff", "run fetched future")):
    """A fetched run being parsed and stored by the processes (``future``)."""


def _remote_result(cache, handoff):
    """The :class:`_Result` of a finished handoff; raises what storing here would."""
    return _verdict_result(cache, handoff.run, handoff.future.result())


def _verdict_result(cache, run, error):
    """The :class:`_Result` of a verdict from another process; records failures here."""
    if error is None:
        return _Result(CACHED, None, None, run)
    if error == ALREADY_CACHED:
        return _Result(ALREADY_CACHED, None, None, run)
    kind, reason, message, transient = error
    if kind == "store":
        # Not a fact about the run (a full disk, say): stop, as storing in
        # this process would.
        raise _StoreFailed(f"storing run {run.id} failed: {message}")
    exc = (RuntimeError(message) if kind == "bug"
           else MetricsUnavailable(reason, message, transient=transient))
    return _Result(*_outcome_of(cache, run, exc), run)


def _parse_store_here(cache, metric_source, run, fetched):
    """Parse and store in this process; returns a :class:`_Result`."""
    try:
        series = _parse(metric_source, run, fetched)
    except Exception as exc:
        return _Result(*_outcome_of(cache, run, exc), run)
    # Outside the ``try``: a failure to store (a full disk) stops the job.
    if not cache.store(run, fetched, series):
        return _Result(ALREADY_CACHED, None, None, run)
    return _Result(CACHED, None, None, run)


def complete_run(source, run):
    """``source.complete(run)``; when that fails, ``run`` marked incomplete: it is optional.

    A run that comes back with :attr:`~ciml.records.RunRecord.incomplete`
    set is cached all the same and completed again by a later cache-data.
    """
    import dataclasses

    complete = getattr(source, "complete", None)
    if complete is None:
        return run
    if run.incomplete is not None:
        run = dataclasses.replace(run, incomplete=None)
    try:
        return complete(run) or run
    except Exception as exc:
        LOG.warning("result source %r could not complete run %s: %s",
                    getattr(source, "name", source), run.id, exc)
        return dataclasses.replace(run, incomplete=f"{type(exc).__name__}: {exc}")


#: The outcome of a cached run whose metadata is completed now.
COMPLETED = "completed"


def _complete_cached(cache, source, run, stop):
    """Complete the metadata of a run cached incomplete; returns a :class:`_Result`."""
    if stop.is_set():
        return _Result("cancelled", None, None, run)
    run = complete_run(source, run)
    if run.incomplete is not None:
        return _Result("still-incomplete", None, None, run)
    cache.update_record(run)
    return _Result(COMPLETED, None, None, run)


def _fetch_one(cache, source, metric_source, run, stop, parse_pool=None):
    """Fetch one run, then parse and store it here or hand it to the processes.

    Returns a :class:`_Result`, or a :class:`_Handoff` when the processes
    took the run: the thread is then free to fetch the next one instead of
    waiting for a parse queued behind other runs.
    """
    if stop.is_set():
        return _Result("cancelled", None, None, run)
    run = complete_run(source, run)
    try:
        # 12.8: the cache records which metric source read the run, and how.
        fetched = metric_source.stamp(metric_source.fetch(run))
    except Exception as exc:
        return _Result(*_outcome_of(cache, run, exc), run)
    if stop.is_set():
        return _Result("cancelled", None, None, run)
    executor = parse_pool.get() if parse_pool is not None else None
    if executor is not None:
        try:
            return _Handoff(run, fetched, executor.submit(_process_parse_store, run, fetched))
        except cf.BrokenExecutor:
            parse_pool.failed()
    return _parse_store_here(cache, metric_source, run, fetched)


def _progress_bar(progress, total, desc):
    if progress is False:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", disable=None if progress is None else False,
                dynamic_ncols=True, leave=True)


class CacheDataStopped(SourceError):
    """cache-data stopped half way; ``summary`` is what it did before, ``cause`` why."""

    def __init__(self, cause, summary):
        stored = (f"{summary['cached']} run(s) cached, {summary['unavailable']} recorded "
                  f"unavailable, {summary['skipped_cached']} already cached, of "
                  f"{summary['selected']} listed")
        super().__init__(f"{cause}; before that: {stored}; rerun cache-data to continue "
                         "(cached runs are skipped)",
                         transient=getattr(cause, "transient", False))
        self.cause = cause
        self.summary = summary


def _plan_processes(processes, workers, metric_source):
    """``(processes, start_after)``: how many parse processes, started after how many runs."""
    if processes is None:
        processes, start_after = auto_processes(workers, metric_source), AUTO_PROCESSES_AFTER
    else:
        processes, start_after = int(processes), 0
    if processes < 0:
        raise CimlError("--processes must not be negative")
    if processes and not _rebuildable(metric_source):
        LOG.warning("metric source %r is not a registered plugin that a worker process can "
                    "build; parsing in threads", metric_source.name)
        processes = 0
    return processes, start_after


class _CacheJob:
    """One ``cache-data`` run, in stages: list, fetch, parse and store, report.

    :meth:`select` decides from the listing which runs need fetching;
    :meth:`submit` hands one to the fetch threads (which parse and store it
    themselves or hand it to the parse processes); :meth:`collect` records
    what became of finished runs; :meth:`report` is the summary.
    """

    def __init__(self, data_path, source, metric_source, build_name, *, workers,
                 processes, start_after, retry_unavailable, progress, limit,
                 retry_incomplete=False, cluster=None):
        self.data_path = data_path
        self.source = source
        self.metric_source = metric_source
        self.build_name = build_name
        self.workers = workers
        self.retry_unavailable = retry_unavailable
        self.retry_incomplete = retry_incomplete
        self.start_after = start_after
        self.cache = RawCache(data_path)
        self.cache.cleanup()
        # Cached runs whose optional metadata a source could not complete
        # last time (few): completed again when listed, or all of them with
        # retry_incomplete.
        self.incomplete = self.cache.incomplete_ids(build_name)
        self.counts = collections.Counter()
        self.reasons = collections.Counter()
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.bar = _progress_bar(progress, limit, build_name)
        self.window = workers * _WINDOW_PER_WORKER
        self.pending = set()
        self.handoffs = {}   # process future -> _Handoff
        self.cluster = cluster
        self.parse_pool = _ParsePool(processes, metric_source, data_path)
        if start_after == 0:
            self.parse_pool.start()
        self.pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ciml-fetch")

    # -- list --------------------------------------------------------------------

    def select(self, runs):
        """The listed runs that need fetching; counts and skips the others."""
        for run in runs:
            self.counts["selected"] += 1
            state = self.cache.state(run.id)
            if state == CACHED and run.id in self.incomplete:
                self.incomplete.discard(run.id)
                self._submit(_complete_cached, self.cache, self.source, run, self.stop)
                continue
            if state == CACHED or (state == UNAVAILABLE and not self.retry_unavailable):
                self.counts["skipped_cached" if state == CACHED
                            else "skipped_unavailable"] += 1
                self._tick(1)
                continue
            yield run

    # -- fetch -------------------------------------------------------------------

    def _submit(self, fn, *args):
        while len(self.pending) >= self.window:
            self.wait(cf.FIRST_COMPLETED)
        self.pending.add(self.pool.submit(fn, *args))

    def submit(self, run):
        """Hand one run to the fetch threads, once the window has room."""
        if self.counts["submitted"] == self.start_after:
            self.parse_pool.start()
        self.counts["submitted"] += 1
        self._submit(_fetch_one, self.cache, self.source, self.metric_source, run, self.stop,
                     self.parse_pool)

    def complete_the_rest(self):
        """``retry_incomplete``: complete the incomplete runs this listing did not name."""
        if not self.retry_incomplete:
            return
        for run_id in sorted(self.incomplete):
            try:
                run = self.cache.record(run_id)
            except Exception:  # removed meanwhile
                continue
            self._submit(_complete_cached, self.cache, self.source, run, self.stop)
        self.incomplete = set()

    def wait(self, return_when=cf.ALL_COMPLETED, quiet=False):
        """Collect finished runs: the first to finish, or all of them."""
        while self.pending:
            done, _ = cf.wait(self.pending, return_when=cf.FIRST_COMPLETED)
            self.pending.difference_update(done)
            if quiet:
                try:
                    self.collect(done)
                except Exception:  # the first error is the one to report
                    LOG.debug("while finishing after an error", exc_info=True)
            else:
                self.collect(done)
            if return_when == cf.FIRST_COMPLETED:
                return

    # -- parse and store -----------------------------------------------------------

    def _result(self, future):
        """The :class:`_Result` of a finished future, or ``None`` while work goes on."""
        handoff = self.handoffs.pop(future, None)
        if handoff is not None:
            try:
                return _remote_result(self.cache, handoff)
            except cf.BrokenExecutor:
                self.parse_pool.failed()
                self.pending.add(self.pool.submit(_parse_store_here, self.cache,
                                                  self.metric_source, handoff.run,
                                                  handoff.fetched))
                return None
        result = future.result()
        if isinstance(result, _Handoff):
            self.handoffs[result.future] = result
            self.pending.add(result.future)
            return None
        return result

    def collect(self, done):
        for future in done:
            result = self._result(future)
            if result is not None:
                self._record(result)
        self._tick(0)

    def _record(self, result):
        """Count what became of one run and move the bar."""
        from ciml.plugins import get_manager

        if result.outcome == "cancelled":
            return
        if result.outcome in (COMPLETED, "still-incomplete"):
            self.counts[COMPLETED if result.outcome == COMPLETED else "incomplete"] += 1
            self._tick(1)
            return
        if result.outcome == ALREADY_CACHED:
            # Another cache-data stored it first: its run, not ours.
            self.counts["skipped_cached"] += 1
            self._tick(1)
            return
        self.counts[result.outcome] += 1
        self.counts["fetched"] += 1
        if result.reason:
            self.reasons[result.reason] += 1
            LOG.debug("%s", result.message)
        if result.outcome == CACHED and result.run.incomplete is not None:
            self.counts["incomplete"] += 1
        if result.outcome == CACHED:
            get_manager().call_lifecycle("ciml_run_cached", run=result.run,
                                         data_path=self.data_path)
        self._tick(1)

    # -- report --------------------------------------------------------------------

    def _tick(self, n):
        if self.bar is None:
            return
        if n:
            self.bar.update(n)
        counts = self.counts
        self.bar.set_postfix(cached=counts[CACHED],
                             skipped=counts["skipped_cached"] + counts["skipped_unavailable"],
                             unavailable=counts[UNAVAILABLE] + counts["transient"],
                             refresh=False)

    def cancel(self):
        """Ctrl-C: runs in flight finish storing (atomically) or are dropped."""
        self.stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.parse_pool.shutdown(wait=False, cancel_futures=True)
        if self.cluster is not None:
            self.cluster.cancel()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.pool.shutdown(wait=True)
        self.parse_pool.shutdown(wait=True)
        for component in (self.source, self.metric_source):
            close = getattr(component, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing must not hide the real outcome
                    LOG.debug("closing %r failed", component, exc_info=True)

    def report(self):
        elapsed = time.monotonic() - self.started
        totals = self.cache.counts(self.build_name)
        self.cache.close()
        counts = self.counts
        return {
            "build_name": self.build_name,
            "selected": counts["selected"],
            "cached": counts[CACHED],
            "skipped_cached": counts["skipped_cached"],
            "skipped_unavailable": counts["skipped_unavailable"],
            "unavailable": counts[UNAVAILABLE],
            "transient": counts["transient"],
            "completed": counts[COMPLETED],
            "incomplete": counts["incomplete"],
            "reasons": dict(sorted(self.reasons.items())),
            "total_cached": totals[CACHED],
            "total_unavailable": totals[UNAVAILABLE],
            "workers": self.workers,
            "scheduler": self.cluster.address if self.cluster is not None else None,
            "processes": (self.parse_pool.processes
                          if self.parse_pool.executor is not None else 0),
            "elapsed_s": round(elapsed, 3),
            "runs_per_s": round(counts["fetched"] / elapsed, 2) if elapsed > 0 else 0.0,
            "data_path": str(self.data_path),
        }


def cache_data(data_path, source, metric_source, build_name, *, since=None, until=None,
               filters=None, limit=None, balanced=False, workers=DEFAULT_WORKERS,
               retry_unavailable=False, progress=None, processes=None,
               retry_incomplete=False, cluster=None):
    """Cache the metrics of a job's runs; returns a summary dict.

    :param data_path: a :class:`ciml.paths.DataPath`.
    :param source: a result source instance (it is closed at the end).
    :param metric_source: a metric source instance.
    :param build_name: the job.
    :param since, until, filters, limit, balanced: passed to
        :meth:`~ciml.base.ResultSource.list_runs`.
    :param workers: concurrent fetches.
    :param retry_unavailable: try again runs known to be unavailable.
    :param retry_incomplete: complete again the metadata of every cached run
        of the job that is incomplete, listed this time or not (listed ones
        always are).
    :param progress: ``None`` shows a bar on a terminal, ``True`` always,
        ``False`` never.
    :param processes: parse in this many worker processes (0: in the
        fetching threads).  ``None`` chooses from the workers and the cores,
        and starts the processes only after :data:`AUTO_PROCESSES_AFTER`
        runs, so that small jobs do not pay for them.
    :param cluster: a :class:`ciml.executor.Cluster`: runs are fetched,
        parsed and stored by Dask workers, in batches
        (:mod:`ciml.dask_cache`; the listing and the index's bookkeeping of
        failures stay here); ``workers`` then bounds the batches on the
        cluster at once and is raised to twice its threads.  The metric
        source must be a registered plugin, and every worker must reach
        ``data_path``.
    :return: ``selected`` (runs the source listed), ``cached`` (newly),
        ``skipped_cached``, ``skipped_unavailable``, ``unavailable``
        (newly recorded), ``transient`` (failed, to retry later),
        ``completed`` (cached runs whose metadata is complete now),
        ``incomplete`` (runs left with incomplete metadata, to retry later),
        ``reasons`` ({reason: count} of this run's failures), ``total_cached``,
        ``elapsed_s``, ``runs_per_s`` (fetched runs per second), ``workers``;
        with a cluster also ``scheduler`` and ``batches`` (tasks submitted).
    """
    workers = int(workers or DEFAULT_WORKERS)
    if workers < 1:
        raise CimlError("--workers must be at least 1")
    if cluster is not None:
        if not _rebuildable(metric_source):
            raise CimlError(f"metric source {metric_source.name!r} is not a registered plugin "
                            "that a Dask worker can build; cache without --scheduler")
        processes, start_after = 0, 0
        workers = max(workers, 2 * cluster.threads())
    else:
        processes, start_after = _plan_processes(processes, workers, metric_source)
    if cluster is not None:
        from ciml.dask_cache import DaskCacheJob as job_class
    else:
        job_class = _CacheJob
    job = job_class(data_path, source, metric_source, build_name, workers=workers,
                    processes=processes, start_after=start_after,
                    retry_unavailable=retry_unavailable, progress=progress, limit=limit,
                    retry_incomplete=retry_incomplete, cluster=cluster)
    try:
        listing = source.list_runs(build_name, since=since, until=until, filters=filters,
                                   limit=limit, balanced=balanced)
        for run in job.select(listing):
            job.submit(run)
        job.complete_the_rest()
        job.wait()
    except CimlError as exc:
        # The source failed half way (a database gone for longer than its
        # retries): the runs already listed are good, so finish them, then
        # say what is stored and that a rerun resumes.
        job.wait(quiet=True)
        try:
            summary = job.report()
        except Exception:  # the index is unreadable too: report the first error
            LOG.debug("no summary after the error", exc_info=True)
            raise exc from None
        if not summary["selected"] and not getattr(exc, "transient", False):
            raise  # a bad option or access denied: nothing to resume
        raise CacheDataStopped(exc, summary) from exc
    except Exception:
        # A plugin's bug: finish the runs in flight all the same.
        job.wait(quiet=True)
        raise
    except BaseException:
        job.cancel()
        raise
    finally:
        job.close()
    return job.report()

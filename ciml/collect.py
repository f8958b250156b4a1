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

from ciml.cache import CACHED, UNAVAILABLE, RawCache
from ciml.errors import CimlError, MetricsUnavailable

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


def _init_process(cls, metric_params, data_root):
    import signal

    from ciml.paths import DataPath

    # Ctrl-C is the parent's to handle: it stops handing out work.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _PROCESS["metrics"] = cls(**metric_params)
    _PROCESS["cache"] = RawCache(DataPath(data_root))


def _parse(metric_source, run, fetched):
    """The run's frame; an empty one is unavailable, like a file that is not there."""
    frame = metric_source.parse(fetched.data, run)
    if frame is None or len(frame) == 0:
        raise MetricsUnavailable("empty", f"run {run.id}: no samples")
    return frame


def _process_ready():
    return os.getpid()


def _process_parse_store(run, fetched):
    """Parse and store one run in a worker process: ``None`` or an error tuple.

    Errors travel as plain tuples: ciml's exceptions take keyword-only
    details that pickling would lose.
    """
    try:
        frame = _parse(_PROCESS["metrics"], run, fetched)
    except MetricsUnavailable as exc:
        return ("unavailable", exc.reason, str(exc), exc.transient)
    except CimlError as exc:
        return ("ciml", "error", str(exc), getattr(exc, "transient", False))
    except Exception as exc:
        return ("bug", "error", f"{type(exc).__name__}: {exc}", True)
    try:
        _PROCESS["cache"].store(run, fetched, frame)
    except Exception as exc:
        return ("store", "error", f"{type(exc).__name__}: {exc}", True)
    return None


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
    ctx.set_forkserver_preload(["ciml.collect", "ciml.cache", "pandas", cls.__module__])
    return cf.ProcessPoolExecutor(
        max_workers=processes, mp_context=ctx, initializer=_init_process,
        initargs=(cls, metric_source.get_params(include_secrets=True), str(data_root)))


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
    """How many parse processes ``processes=None`` means for this many workers."""
    if metric_source is not None and not _rebuildable(metric_source):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    if workers < 4 or cores < 2:
        return 0
    return min(cores, 8, workers)


class _Result(collections.namedtuple("_Result", "outcome reason message run")):
    """What became of one run: ``cached``, ``unavailable``, ``transient`` or ``cancelled``."""


class _Handoff(collections.namedtuple("_Handoff", "run fetched future")):
    """A fetched run being parsed and stored by the processes (``future``)."""


def _remote_result(cache, handoff):
    """The :class:`_Result` of a finished handoff; raises what storing here would."""
    error = handoff.future.result()
    run = handoff.run
    if error is None:
        return _Result(CACHED, None, None, run)
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
        frame = _parse(metric_source, run, fetched)
    except Exception as exc:
        return _Result(*_outcome_of(cache, run, exc), run)
    # Outside the ``try``: a failure to store (a full disk) stops the job.
    cache.store(run, fetched, frame)
    return _Result(CACHED, None, None, run)


def complete_run(source, run):
    """``source.complete(run)``, or ``run`` itself when that fails: it is optional."""
    complete = getattr(source, "complete", None)
    if complete is None:
        return run
    try:
        return complete(run) or run
    except Exception as exc:
        LOG.warning("result source %r could not complete run %s: %s",
                    getattr(source, "name", source), run.id, exc)
        return run


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


def cache_data(data_path, source, metric_source, build_name, *, since=None, until=None,
               filters=None, limit=None, balanced=False, workers=DEFAULT_WORKERS,
               retry_unavailable=False, progress=None, processes=None):
    """Cache the metrics of a job's runs; returns a summary dict.

    :param data_path: a :class:`ciml.paths.DataPath`.
    :param source: a result source instance (it is closed at the end).
    :param metric_source: a metric source instance.
    :param build_name: the job.
    :param since, until, filters, limit, balanced: passed to
        :meth:`~ciml.base.ResultSource.list_runs`.
    :param workers: concurrent fetches.
    :param retry_unavailable: try again runs known to be unavailable.
    :param progress: ``None`` shows a bar on a terminal, ``True`` always,
        ``False`` never.
    :param processes: parse in this many worker processes (0: in the
        fetching threads).  ``None`` chooses from the workers and the cores,
        and starts the processes only after :data:`AUTO_PROCESSES_AFTER`
        runs, so that small jobs do not pay for them.
    :return: ``selected`` (runs the source listed), ``cached`` (newly),
        ``skipped_cached``, ``skipped_unavailable``, ``unavailable``
        (newly recorded), ``transient`` (failed, to retry later),
        ``reasons`` ({reason: count} of this run's failures), ``total_cached``,
        ``elapsed_s``, ``runs_per_s`` (fetched runs per second), ``workers``.
    """
    workers = int(workers or DEFAULT_WORKERS)
    if workers < 1:
        raise CimlError("--workers must be at least 1")
    cache = RawCache(data_path)
    cache.cleanup()
    counts = collections.Counter()
    reasons = collections.Counter()
    stop = threading.Event()
    started = time.monotonic()
    bar = _progress_bar(progress, limit, build_name)
    window = workers * _WINDOW_PER_WORKER
    pending = set()

    def update_bar():
        if bar is not None:
            bar.set_postfix(cached=counts[CACHED],
                            skipped=counts["skipped_cached"] + counts["skipped_unavailable"],
                            unavailable=counts[UNAVAILABLE] + counts["transient"],
                            refresh=False)

    handoffs = {}   # process future -> _Handoff

    def collect(done):
        from ciml.plugins import get_manager

        for future in done:
            handoff = handoffs.pop(future, None)
            if handoff is not None:
                try:
                    result = _remote_result(cache, handoff)
                except cf.BrokenExecutor:
                    parse_pool.failed()
                    pending.add(pool.submit(_parse_store_here, cache, metric_source,
                                            handoff.run, handoff.fetched))
                    continue
            else:
                result = future.result()
                if isinstance(result, _Handoff):
                    handoffs[result.future] = result
                    pending.add(result.future)
                    continue
            if result.outcome == "cancelled":
                continue
            counts[result.outcome] += 1
            counts["fetched"] += 1
            if result.reason:
                reasons[result.reason] += 1
                LOG.debug("%s", result.message)
            if result.outcome == CACHED:
                get_manager().call_lifecycle("ciml_run_cached", run=result.run,
                                             data_path=data_path)
            if bar is not None:
                bar.update(1)
        update_bar()

    if processes is None:
        processes = auto_processes(workers, metric_source)
        start_after = AUTO_PROCESSES_AFTER
    else:
        processes, start_after = int(processes), 0
    if processes < 0:
        raise CimlError("--processes must not be negative")
    if processes and not _rebuildable(metric_source):
        LOG.warning("metric source %r is not a registered plugin that a worker process can "
                    "build; parsing in threads", metric_source.name)
        processes = 0
    parse_pool = _ParsePool(processes, metric_source, data_path.root)
    if start_after == 0:
        parse_pool.start()
    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ciml-fetch")
    try:
        for run in source.list_runs(build_name, since=since, until=until, filters=filters,
                                    limit=limit, balanced=balanced):
            counts["selected"] += 1
            state = cache.state(run.id)
            if state == CACHED or (state == UNAVAILABLE and not retry_unavailable):
                counts["skipped_cached" if state == CACHED else "skipped_unavailable"] += 1
                if bar is not None:
                    bar.update(1)
                    update_bar()
                continue
            while len(pending) >= window:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                pending.difference_update(done)
                collect(done)
            if counts["submitted"] == start_after:
                parse_pool.start()
            counts["submitted"] += 1
            pending.add(pool.submit(_fetch_one, cache, source, metric_source, run, stop,
                                    parse_pool))
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            pending.difference_update(done)
            collect(done)
    except Exception:
        # The source failed half way (a database gone): the runs already
        # listed are good, so finish them before reporting the error.
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            pending.difference_update(done)
            try:
                collect(done)
            except Exception:  # the first error is the one to report
                LOG.debug("while finishing after an error", exc_info=True)
        raise
    except BaseException:
        # Ctrl-C: runs in flight finish storing (atomically) or are dropped;
        # nothing half-written is ever indexed.
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        parse_pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if bar is not None:
            bar.close()
        pool.shutdown(wait=True)
        parse_pool.shutdown(wait=True)
        for component in (source, metric_source):
            close = getattr(component, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing must not hide the real outcome
                    LOG.debug("closing %r failed", component, exc_info=True)
    elapsed = time.monotonic() - started
    totals = cache.counts(build_name)
    cache.close()
    return {
        "build_name": build_name,
        "selected": counts["selected"],
        "cached": counts[CACHED],
        "skipped_cached": counts["skipped_cached"],
        "skipped_unavailable": counts["skipped_unavailable"],
        "unavailable": counts[UNAVAILABLE],
        "transient": counts["transient"],
        "reasons": dict(sorted(reasons.items())),
        "total_cached": totals[CACHED],
        "total_unavailable": totals[UNAVAILABLE],
        "workers": workers,
        "processes": processes if parse_pool.executor is not None else 0,
        "elapsed_s": round(elapsed, 3),
        "runs_per_s": round(counts["fetched"] / elapsed, 2) if elapsed > 0 else 0.0,
        "data_path": str(data_path.root),
    }

"""Where the heavy stages run: here (threads, processes) or on a Dask cluster.

``cache-data``, ``build-dataset`` and batch ``predict`` run their per-run
(or per-slice) work in local threads and processes by default.  Given a
scheduler address (``--scheduler tcp://host:8786`` or
:data:`SCHEDULER_ENV`), they hand the same work to the workers of a Dask
cluster through a :class:`Cluster`; the stage code does not change what
it computes, only where.

Dask is imported here and only when a scheduler is given, so ``ciml
--help`` and every local run stay as fast as without it.

What a task needs on a worker:

* ciml (and the plugins the stage uses) installed, same versions as the
  client: functions and plugin classes travel by reference;
* the data path, reachable from every worker under the same name (a
  shared file system, or an object store URL);
* nothing from the client's memory: tasks take small arguments (run
  records, chain specs, paths) and write their results to the data path
  themselves, returning only a short verdict.

A worker that dies mid-task is not an error: the scheduler runs its tasks
again elsewhere, and every task is written so that running it twice gives
the same files (a run is stored atomically, a Zarr region is overwritten
with the same bytes).
"""

import logging
import os
import threading

from ciml.errors import CimlError

LOG = logging.getLogger(__name__)

#: The environment variable that gives the scheduler when ``--scheduler`` is not.
SCHEDULER_ENV = "CIML_DASK_SCHEDULER"

#: Seconds to wait for the scheduler to answer before giving up.
CONNECT_TIMEOUT_S = 30


def add_scheduler_option(parser):
    """``--scheduler ADDRESS`` on a command whose heavy work can run on Dask."""
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", default=os.environ.get(SCHEDULER_ENV) or None,
        help="Run the per-run work on the workers of this Dask scheduler, e.g. "
             f"tcp://10.0.0.5:8786 (env: {SCHEDULER_ENV}; default: local threads and "
             "processes). Every worker needs ciml installed and the same data path")
    return parser


class SchedulerError(CimlError):
    """The Dask scheduler cannot be reached, or its workers cannot run ciml."""


#: Messages to the scheduler a client keeps for debugging (distributed's
#: ``distributed.admin.low-level-log-length``, 1000 by default).
CLIENT_LOG_MESSAGES = 20


class Cluster:
    """A Dask client, connected to a running scheduler, for one stage.

    :param address: the scheduler's address (``tcp://host:8786``).
    :param announce: called once with a line naming the scheduler, its
        workers and the dashboard link (default: logged at INFO, which the
        ``ciml`` command shows on stderr).
    """

    def __init__(self, address, *, announce=None, timeout=CONNECT_TIMEOUT_S):
        try:
            from distributed import Client
        except ImportError:
            raise SchedulerError(
                "--scheduler needs Dask: pip install 'ciml[dask]' (dask and distributed) "
                "here and on every worker") from None
        self.address = address
        import dask

        try:
            # set_as_default=False: this client is the stage's, not every
            # dask computation's in the process (a plugin's, say).  The
            # connection to the scheduler keeps its last messages for
            # debugging, 1000 by default: with a batch of run records in
            # every task, tens of MB that grew with the runs of a stage.
            with dask.config.set({"distributed.admin.low-level-log-length":
                                  CLIENT_LOG_MESSAGES}):
                self.client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise SchedulerError(f"cannot reach the Dask scheduler at {address}: {exc}; "
                                 "is it running (dask scheduler) and reachable from "
                                 "here?") from None
        self._futures = set()
        self._lock = threading.Lock()
        nthreads = self.nthreads()
        line = (f"Dask scheduler {address}: {len(nthreads)} worker(s), "
                f"{sum(nthreads.values())} thread(s); dashboard: {self.dashboard_link}")
        (announce or LOG.info)(line)
        if not nthreads:
            LOG.warning("the Dask scheduler at %s has no worker yet; tasks wait for one",
                        address)

    @property
    def dashboard_link(self):
        """The scheduler's dashboard URL (``None`` when it serves none)."""
        try:
            return self.client.dashboard_link
        except Exception:  # no bokeh on the scheduler: no dashboard
            return None

    def nthreads(self):
        """``{worker address: threads}`` of the workers connected now."""
        return dict(self.client.nthreads())

    def threads(self):
        """How many tasks the cluster runs at once (at least 1)."""
        return max(1, sum(self.nthreads().values()))

    # -- tasks -------------------------------------------------------------------

    def submit(self, fn, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` on a worker; returns a Dask future.

        ``pure=False``: two tasks with the same arguments are two tasks (a
        retried run is fetched again, not answered from the first result).
        """
        future = self.client.submit(fn, *args, pure=False, **kwargs)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future):
        with self._lock:
            self._futures.discard(future)

    def scatter(self, value):
        """Send ``value`` to the workers once; tasks take the returned future."""
        return self.client.scatter(value, broadcast=True, hash=False)

    def as_completed(self, futures):
        """The futures as they finish.

        Through each future's own callback: ``distributed.as_completed``
        looks for a default client, and this one is not (``set_as_default``).
        """
        import queue

        done = queue.SimpleQueue()
        futures = list(futures)
        for future in futures:
            future.add_done_callback(done.put)
        for _ in futures:
            yield done.get()

    def cancel(self):
        """Cancel every task of this client still waiting or running."""
        with self._lock:
            futures, self._futures = list(self._futures), set()
        if futures:
            try:
                self.client.cancel(futures)
            except Exception:  # the scheduler is gone: nothing left to cancel
                LOG.debug("cancelling %d task(s) failed", len(futures), exc_info=True)

    def close(self):
        """Cancel what is left and disconnect.  Idempotent."""
        self.cancel()
        try:
            self.client.close()
        except Exception:
            LOG.debug("closing the Dask client failed", exc_info=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(address, **kwargs):
    """A :class:`Cluster` for ``address``, or ``None`` when no address is given."""
    if not address:
        return None
    return Cluster(address, **kwargs)


# -- state kept in a worker process between tasks ------------------------------

_WORKER_STATE = {}
_WORKER_LOCK = threading.Lock()


def data_path_key(data_path):
    """A hashable key naming a data path, as it travels to a worker (a
    :class:`ciml.paths.DataPath` pickles as its location and options)."""
    options = getattr(data_path, "storage_options", None) or {}
    return (str(data_path.root), repr(sorted(options.items())),
            getattr(data_path, "catalog_uri", None))


def worker_cached(key, factory):
    """``factory()``, made once per worker process for ``key`` and then reused.

    A task that needs a raw cache, a metric source or a trained model gets
    the one the previous task of the same stage made in this process,
    instead of opening a database or loading TensorFlow per run.  The
    worker's threads share it: what it holds must be thread-safe (the raw
    cache is; a predictor serializes itself).
    """
    with _WORKER_LOCK:
        if key not in _WORKER_STATE:
            _WORKER_STATE[key] = factory()
        return _WORKER_STATE[key]

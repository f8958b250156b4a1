"""``ciml serve --watch``: the watcher in a thread of the server's process, measured.

The server owns the process's signals (uvicorn stops on SIGINT/SIGTERM);
the watcher runs beside it without signal handlers and is drained when
the server stops.  :class:`ServedWatcher` notes when each event arrived, so
``/metrics`` can show the event-to-prediction latency and the queue depth.
"""

from __future__ import annotations

import logging
import threading
import time

from ciml.online import Watcher

LOG = logging.getLogger(__name__)


class ServedWatcher(Watcher):
    """A :class:`ciml.online.Watcher` that reports to :class:`ciml.serve.metrics.WatchMetrics`."""

    def __init__(self, *args, metrics=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.metrics = metrics
        self._arrived: dict[str, float] = {}
        self._arrived_lock = threading.Lock()
        self._local = threading.local()
        if metrics is not None:
            metrics.watcher = self

    def on_event(self, event):
        key = self._event_key(event)
        if key is None:
            return super().on_event(event)
        with self._arrived_lock:
            self._arrived.setdefault(key, time.monotonic())
        try:
            return super().on_event(event)
        finally:
            with self._events_lock:
                queued = key in self._in_hand
            if not queued:
                # Ignored, repeated or refused: no prediction will end its wait.
                with self._arrived_lock:
                    self._arrived.pop(key, None)

    def process(self, event):
        with self._arrived_lock:
            self._local.arrived = self._arrived.pop(self._event_key(event), None)
        try:
            return super().process(event)
        finally:
            self._local.arrived = None

    def report(self, record):
        super().report(record)
        if self.metrics is None:
            return
        arrived = getattr(self._local, "arrived", None)
        try:
            self.metrics.observe(record, None if arrived is None
                                 else time.monotonic() - arrived)
        except Exception:  # a metric is never a reason to lose a prediction
            LOG.exception("could not count run %s in the metrics", record.get("run_id"))


class WatchThread:
    """Runs a watcher in a daemon thread; :meth:`stop` drains it like SIGTERM would."""

    def __init__(self, watcher):
        self.watcher = watcher
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ciml-serve-watch", daemon=True)

    def _run(self):
        try:
            self.watcher.run()
        except BaseException as exc:  # reported by the server; it keeps serving
            self.error = exc
            LOG.error("the watcher stopped: %s", exc,
                      exc_info=not hasattr(exc, "reason") and not str(exc))

    def start(self):
        self.thread.start()

    def stop(self, timeout):
        self.watcher.stop(drain=True, timeout=timeout)
        self.thread.join(None if timeout is None else timeout + 5.0)
        if self.thread.is_alive():
            self.watcher.stop(drain=False)
            self.thread.join(5.0)

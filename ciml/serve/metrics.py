"""``/metrics``: Prometheus' text format, from the store and from an in-process watcher.

Two sources, so that the figures are right however ciml is deployed:

* the prediction store (and the data path's models), read when Prometheus
  scrapes, at most every :data:`STORE_TTL` seconds: predictions by job and
  class, unusual runs, runs that could not be predicted by reason, model
  age.  These count every watcher that shares the store, in this process
  or not; they are gauges because pruning the store lowers them.
* the watcher ``ciml serve --watch`` runs in this process: counters of what
  it did since it started, the event-to-prediction latency histogram and
  the queue depth.  A watcher in another process exposes none of these
  here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import Response

LOG = logging.getLogger(__name__)

#: Seconds a scrape's store figures are reused (a scrape every 15 s costs one query).
STORE_TTL = 10.0
#: Event-to-prediction latency buckets, seconds: logs arrive late, so up to minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class StoreCollector:
    """A prometheus-client collector reading the store's aggregates (cached briefly)."""

    def __init__(self, state):
        self.state = state
        self._lock = threading.Lock()
        self._at = -STORE_TTL
        self._figures: dict[str, Any] = {}

    def _read(self) -> dict[str, Any]:
        import sqlalchemy as sa

        store = self.state.store
        store.count()  # makes the tables where the store is new
        t = store.predictions
        by_class = sa.select(t.c.build_name, t.c.predicted, sa.func.count()).where(
            t.c.predicted.isnot(None)).group_by(t.c.build_name, t.c.predicted)
        unusual = sa.select(t.c.build_name, sa.func.count()).where(
            t.c.unusual.is_(True)).group_by(t.c.build_name)
        failures = sa.select(t.c.build_name, t.c.reason, sa.func.count()).where(
            t.c.error.isnot(None)).group_by(t.c.build_name, t.c.reason)
        with store.engine.connect() as conn:
            return {"by_class": conn.execute(by_class).fetchall(),
                    "unusual": conn.execute(unusual).fetchall(),
                    "failures": conn.execute(failures).fetchall()}

    def figures(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= STORE_TTL:
                try:
                    self._figures = {**self._read(), "up": 1}
                except Exception as exc:
                    LOG.warning("metrics: the prediction store did not answer: %s",
                                type(exc).__name__)
                    self._figures = {"up": 0}
                self._figures["model_age"] = _model_ages(self.state.data_path)
                self._at = now
            return self._figures

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        f = self.figures()
        up = GaugeMetricFamily("ciml_store_up", "1 when the prediction store answered the "
                               "last scrape")
        up.add_metric([], f.get("up", 0))
        yield up
        g = GaugeMetricFamily("ciml_predictions", "Predictions in the store, by job and "
                              "predicted class", labels=["job", "class"])
        for job, cls, n in f.get("by_class", ()):
            g.add_metric([job or "", cls or ""], n)
        yield g
        g = GaugeMetricFamily("ciml_unusual_runs", "Predictions in the store whose run was "
                              "unusual for its job", labels=["job"])
        for job, n in f.get("unusual", ()):
            g.add_metric([job or ""], n)
        yield g
        g = GaugeMetricFamily("ciml_fetch_failures", "Runs in the store that could not be "
                              "predicted, by job and reason", labels=["job", "reason"])
        for job, reason, n in f.get("failures", ()):
            g.add_metric([job or "", reason or "unknown"], n)
        yield g
        g = GaugeMetricFamily("ciml_model_age_seconds", "Seconds since the model was "
                              "trained", labels=["model"])
        for model, age in (f.get("model_age") or {}).items():
            g.add_metric([model], age)
        yield g


def _model_ages(data_path) -> dict[str, float]:
    from ciml.model import METADATA_FILE

    root = data_path.models
    out = {}
    if not root.is_dir():
        return out
    now = time.time()
    for meta in root.glob(f"*/*/{METADATA_FILE}"):
        if meta.parent.name.startswith(".") or meta.parent.parent.name.startswith("."):
            continue
        try:
            trained = meta.stat().st_mtime
        except OSError:
            continue
        out[f"{meta.parent.parent.name}/{meta.parent.name}"] = max(0.0, now - trained)
    return out


class WatchMetrics:
    """Counters of the watcher in this process; registered on ``ciml_prediction_made``."""

    def __init__(self, registry):
        from prometheus_client import Counter, Gauge, Histogram

        self.predictions = Counter("ciml_watch_predictions", "Runs this process's watcher "
                                   "predicted, by job and class", ["job", "class"],
                                   registry=registry)
        self.unusual = Counter("ciml_watch_unusual_runs", "Unusual runs this process's "
                               "watcher saw, by job", ["job"], registry=registry)
        self.failures = Counter("ciml_watch_fetch_failures", "Runs this process's watcher "
                                "could not predict, by job and reason", ["job", "reason"],
                                registry=registry)
        self.latency = Histogram("ciml_event_to_prediction_seconds", "From the trigger's "
                                 "event to the prediction's record, this process's watcher",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.queue = Gauge("ciml_watch_queue_depth", "Runs waiting in this process's "
                           "watcher's queue", registry=registry)
        self.queue.set_function(self._queue_depth)
        self.watcher = None

    def _queue_depth(self) -> float:
        watcher = self.watcher
        return float(watcher.queue.qsize()) if watcher is not None else 0.0

    def observe(self, record: dict[str, Any], latency: float | None) -> None:
        job = str(record.get("build_name") or "")
        if record.get("error"):
            self.failures.labels(job, str(record.get("reason") or "unknown")).inc()
        else:
            self.predictions.labels(job, str(record.get("predicted") or "")).inc()
            if (record.get("unusual") or {}).get("unusual"):
                self.unusual.labels(job).inc()
        if latency is not None:
            self.latency.observe(latency)


def install(app, state) -> None:
    from prometheus_client import CollectorRegistry

    from ciml.serve import security

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(state))
    state.registry = registry
    state.watch_metrics = WatchMetrics(registry)

    @app.get("/metrics", include_in_schema=False,
             dependencies=[Depends(security.require_read)])
    def metrics(request: Request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

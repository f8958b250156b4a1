"""What the pages and the API show, read from the data path and the store, as plain dicts.

One function per object, used by both the JSON API and the HTML pages, so a
page never shows what the API would not, and the other way round.  Each
raises :class:`ciml.errors.NotFoundError` for an object that is not there.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ciml.errors import NotFoundError

#: Seconds the list of cached runs is kept before the index is read again.
RUNS_TTL = 5.0


def _run_dict(run, samples=None, labels=None) -> dict[str, Any]:
    from ciml.http import redact_url

    data = run.to_dict()
    if data.get("artifacts_url"):
        data["artifacts_url"] = redact_url(data["artifacts_url"])
    if samples is not None:
        data["samples"] = samples
    data["human_labels"] = dict(sorted((labels or {}).items()))
    return data


class RunLister:
    """The cached runs, newest first, read from the index at most every :data:`RUNS_TTL` s."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._rows: list[dict] = []

    def rows(self, state, build_name=None):
        cache = state.cache
        if not cache.index_path.exists():
            return []
        key = (build_name, int(time.monotonic() // RUNS_TTL))
        with self._lock:
            if key != self._key:
                entries = cache.entries(build_name)
                entries.reverse()
                self._rows = [{"run": e["run"], "samples": e["samples"]} for e in entries]
                self._key = key
            return self._rows


def list_runs(state, *, build_name=None, labelled=False, limit=50, offset=0):
    """``{"items", "total", "limit", "offset"}``: cached runs with their human labels."""
    from ciml.human_labels import labels_of

    rows = state.runs.rows(state, build_name)
    human = labels_of(state.cache) if rows else {}
    if labelled:
        rows = [r for r in rows if r["run"].id in human]
    page = rows[offset:offset + limit]
    return {"items": [_run_dict(r["run"], r["samples"], human.get(r["run"].id))
                      for r in page],
            "total": len(rows), "limit": limit, "offset": offset}


def run_detail(state, run_id: str) -> dict[str, Any]:
    """A run: its cached record (if cached), human labels, predictions, reports."""
    from ciml.cache import CACHED, UNAVAILABLE
    from ciml.http import redact_text
    from ciml.human_labels import labels_of

    out: dict[str, Any] = {"id": run_id, "state": None, "run": None, "unavailable": None}
    cache = state.cache
    if cache.index_path.exists():
        status = cache.state(run_id)
        out["state"] = status
        if status == CACHED:
            info = cache.info(run_id)
            out["run"] = _run_dict(cache.record(run_id), info.get("samples"),
                                   labels_of(cache, {run_id}).get(run_id))
            out["run"]["metric_columns"] = list(info.get("columns") or ())
            out["run"]["first"] = info.get("first")
            out["run"]["last"] = info.get("last")
        elif status == UNAVAILABLE:
            for entry in cache.unavailable():
                if entry["run_id"] == run_id:
                    out["unavailable"] = {**entry, "message": redact_text(entry["message"])}
                    break
    predictions = state.store.for_run(run_id)
    for row in predictions:
        # The whole record is the API's; the page shows its parts.
        row.setdefault("record", None)
    out["predictions"] = predictions
    out["reports"] = state.store.reports_of(run_id) if predictions else []
    if out["run"] is None and not predictions and out["unavailable"] is None:
        raise NotFoundError(f"no run {run_id!r}: it is neither in the raw cache nor in "
                            "the prediction store")
    return out


def set_labels(state, run_id: str, labels: dict[str, str], who: str | None) -> list[dict]:
    """Store human labels for a cached run (``ciml run label``'s store)."""
    from ciml import human_labels

    for key, value in labels.items():
        human_labels.check_label(str(key), str(value))
    return human_labels.set_labels(state.cache, run_id, labels, who=who)


# -- datasets ----------------------------------------------------------------


def list_datasets(state) -> list[dict[str, Any]]:
    from ciml.dataset import list_datasets as names

    out = []
    for name in names(state.data_path):
        try:
            out.append(dataset_summary(state, name))
        except Exception as exc:  # one broken dataset must not hide the others
            out.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
    return out


def _open_dataset(state, name):
    from ciml.dataset import Dataset
    from ciml.paths import check_name

    return Dataset.open(state.data_path, check_name(name, "dataset name"))


def dataset_summary(state, name: str) -> dict[str, Any]:
    ds = _open_dataset(state, name)
    attrs = ds.attrs
    return {
        "name": ds.name,
        "build_name": ds.config.get("build_name"),
        "class_label": ds.config.get("class_label"),
        "classes": ds.classes,
        "axis": ds.axis,
        "example_shape": list(ds.example_shape),
        "features": len(ds.features),
        "splits": {name: int(n) for name, n in (attrs.get("counts") or {}).items()}
        or {name: len(ds.split(name)) for name in ds.splits},
        "fingerprint": ds.fingerprint,
        "created": attrs.get("created") or ds.provenance.get("time"),
        "has_profile": ds.profile is not None,
    }


def dataset_classes(state, name: str) -> dict[str, Any]:
    """Examples per class and split."""
    import numpy as np

    ds = _open_dataset(state, name)
    counts = {}
    for split in ds.splits:
        y = np.asarray(ds.split(split).y[:])
        counts[split] = {cls: int((y == i).sum()) for i, cls in enumerate(ds.classes)}
    return {"name": ds.name, "classes": ds.classes, "counts": counts}


def dataset_splits(state, name: str) -> dict[str, Any]:
    ds = _open_dataset(state, name)
    return {"name": ds.name, "splits": {s: len(ds.split(s)) for s in ds.splits},
            "split": ds.config.get("split"), "seed": ds.config.get("seed"),
            "tdt_split": ds.config.get("tdt_split")}


def dataset_profile(state, name: str) -> dict[str, Any]:
    """The training runs' profile (what ``unusual`` compares with), summarised."""
    ds = _open_dataset(state, name)
    profile = ds.profile
    if profile is None:
        return {"name": ds.name, "profile": None}
    small = {k: v for k, v in profile.items() if not isinstance(v, (list, dict)) or
             len(v) <= 64}
    return {"name": ds.name, "profile": small}


def dataset_detail(state, name: str) -> dict[str, Any]:
    ds = _open_dataset(state, name)
    out = dataset_summary(state, name)
    out["config"] = ds.config
    out["provenance"] = ds.provenance
    out["feature_names"] = ds.features
    out["class_counts"] = dataset_classes(state, name)["counts"]
    out["models"] = [m["name"] for m in list_models(state) if m["dataset"] == name]
    return out


# -- models ------------------------------------------------------------------


def _model_dict(entry) -> dict[str, Any]:
    meta = entry["metadata"] or {}
    metrics = entry["metrics"] or {}
    test = metrics.get("test", metrics)
    base = test.get("baseline") or {}
    return {
        "name": f"{entry['dataset']}/{entry['experiment']}",
        "dataset": entry["dataset"],
        "experiment": entry["experiment"],
        "estimator": meta.get("estimator") or meta.get("plugin"),
        "trained": meta.get("time") or meta.get("created"),
        "macro_f1": test.get("macro_f1"),
        "baseline_macro_f1": base.get("macro_f1"),
        "accuracy": test.get("accuracy"),
        "baseline_accuracy": base.get("accuracy"),
    }


def list_models(state) -> list[dict[str, Any]]:
    from ciml.model import list_models as models

    return [_model_dict(m) for m in models(state.data_path)]


def model_detail(state, dataset: str, experiment: str) -> dict[str, Any]:
    """Metrics beside the baseline, the operating point, importance, metadata."""
    from ciml.metrics import metric_rows
    from ciml.model import read_metadata, read_metrics
    from ciml.paths import check_name

    check_name(dataset, "dataset name")
    check_name(experiment, "experiment name")
    meta = read_metadata(state.data_path, dataset, experiment)
    metrics = read_metrics(state.data_path, dataset, experiment)
    test = metrics.get("test", metrics)
    out = _model_dict({"dataset": dataset, "experiment": experiment, "metadata": meta,
                       "metrics": metrics})
    out["metadata"] = meta
    out["metrics"] = test
    out["rows"] = [{"metric": m, "model": v, "baseline": b} for m, v, b in metric_rows(test)]
    out["operating_point"] = (metrics.get("operating_point") or {}).get("decision")
    out["importance"] = metrics.get("feature_importance") or []
    return out


# -- plugins -----------------------------------------------------------------


def list_plugins() -> list[dict[str, Any]]:
    from ciml.plugins import get_manager

    manager = get_manager()
    rows = [{"kind": i.kind.replace("_", "-"), "name": i.name, "module": i.module,
             "distribution": i.distribution or "", "version": i.version or "",
             "description": i.description} for i in manager.all()]
    rows += [{"kind": "hook", "name": h.hook, "module": h.module,
              "distribution": h.distribution or "", "version": h.version or "",
              "description": h.description} for h in manager.lifecycle_hooks()]
    return rows

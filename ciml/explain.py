"""Why a model predicted what it did: per-prediction explanations and global importance.

An operator acts on a verdict only when the evidence is in front of them:
"memory used peaked at 7.8 GB where passed runs stay near 3 GB, in the
last tenth of the run".  Three pieces make that:

* the estimator's :meth:`~ciml.base.Estimator.explain`: per input cell
  ``(time step or aggregate, feature)``, how much it pushed the example
  toward the predicted class.  The core default is :func:`occlusion`
  (model-agnostic: any third-party estimator gets it for free); ``gbdt``
  overrides it with LightGBM's exact contributions;
* a *reference* stored with the model at training time (:func:`fit_reference`):
  the median, 10th and 90th percentile of each cell over the passed
  training runs (all training runs when fewer than ten passed), i.e. what
  "typical" means for the job;
* :func:`explanation`: the record every prediction carries, the top
  features with the run's value beside the typical one (in the metric's
  own units when the dataset's last step is a scaler that can be undone),
  and for time-series datasets the time windows that mattered.

Reference arrays are saved with :func:`numpy.savez` and read with
``allow_pickle=False``: loading a model never runs code.
"""

import logging

import numpy as np

from ciml import fileutil

LOG = logging.getLogger(__name__)

REFERENCE_FILE = "reference.npz"
IMPORTANCE_FILE = "importance.json"

#: A time axis longer than this is occluded in this many windows.
MAX_WINDOWS = 12
#: Occluded copies predicted per call (bounds memory for long series).
OCCLUSION_BATCH = 64
#: Training examples read to compute the reference.
REFERENCE_SAMPLE = 2000
#: Dev examples explained to estimate a model-agnostic global importance.
IMPORTANCE_SAMPLE = 40
#: Features and windows an explanation lists.
TOP = 3


def windows(n_steps, max_windows=MAX_WINDOWS):
    """``[(start, stop)]`` contiguous groups of time steps (one per step when few)."""
    if n_steps <= max_windows:
        return [(i, i + 1) for i in range(n_steps)]
    edges = np.linspace(0, n_steps, max_windows + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def occlusion(estimator, X, reference, target=None):
    """Model-agnostic contributions: the drop in ``p(target)`` when a cell group is typical.

    The time axis is cut in :func:`windows`; each (window, feature) group is
    replaced by the reference's values and the example predicted again.
    The drop in the target class's probability is shared evenly among the
    group's cells.  Cost: ``windows x features`` predictions per example,
    batched.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 2:
        X = X[None]
    n, t, f = X.shape
    ref = np.asarray(reference, dtype=np.float32).reshape(t, f)
    out = np.zeros(X.shape, dtype=np.float64)
    if n == 0:
        return out
    base = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    target = base.argmax(axis=1) if target is None else \
        np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))
    groups = [(a, b, j) for a, b in windows(t) for j in range(f)]
    for i in range(n):
        p0 = base[i, target[i]]
        for start in range(0, len(groups), OCCLUSION_BATCH):
            part = groups[start:start + OCCLUSION_BATCH]
            batch = np.repeat(X[i:i + 1], len(part), axis=0)
            for k, (a, b, j) in enumerate(part):
                batch[k, a:b, j] = ref[a:b, j]
            p = np.asarray(estimator.predict_proba(batch), dtype=np.float64)[:, target[i]]
            for k, (a, b, j) in enumerate(part):
                out[i, a:b, j] = (p0 - p[k]) / (b - a)
    return out


# -- the reference: what a typical passed run looks like -------------------------


def _reference_rows(ds):
    """Indices of the training examples that define "typical" (passed ones if enough)."""
    from ciml.records import PASSED

    train = ds.split("training")
    y = np.asarray(train.y)
    rows = np.arange(len(y))
    if PASSED in ds.classes:
        passed = rows[y == ds.classes.index(PASSED)]
        if len(passed) >= 10:
            rows = passed
    if len(rows) > REFERENCE_SAMPLE:
        rows = np.random.default_rng(0).choice(rows, REFERENCE_SAMPLE, replace=False)
        rows.sort()
    return train, rows


def fit_reference(ds):
    """``{"median", "low", "high", "covered"}`` over the reference training runs.

    ``median``, ``low`` and ``high`` are arrays ``(t, f)``: per time step,
    over the runs that last that long.  Shorter runs are padded to the
    dataset's length, and their padding is not what a typical run does
    there: counted in, it dragged the band towards the padding value where
    the shorter runs end.  ``covered`` ``(t,)`` counts the runs behind each
    step; a step no run reaches keeps the padded runs' statistics (what a
    padded example holds there), and the pictures draw no band over it.
    """
    from ciml.dataset import iter_batches

    train, rows = _reference_rows(ds)
    wanted = np.zeros(len(train), dtype=bool)
    wanted[rows] = True
    parts, pos = [], 0
    for x, _ in iter_batches(train.X):
        keep = wanted[pos:pos + len(x)]
        if keep.any():
            parts.append(x[keep])
        pos += len(x)
    sample = np.concatenate(parts) if parts else np.zeros((1, *ds.example_shape), np.float32)
    low, median, high = np.percentile(sample, [10, 50, 90], axis=0)
    steps = sample.shape[1]
    lengths = np.asarray(train.lengths)[rows] if parts else np.array([steps])
    lengths = np.clip(lengths.astype(np.int64), 1, steps)
    covers = np.arange(steps)[None, :] < lengths[:, None]  # (runs, t)
    covered = covers.sum(axis=0)
    partial = np.flatnonzero((covered > 0) & (covered < len(sample)))
    for i in partial:
        # Only the runs still going at step i (steps every run covers stay as they were).
        low[i], median[i], high[i] = np.percentile(sample[covers[:, i], i], [10, 50, 90],
                                                   axis=0)
    return {"median": median.astype(np.float32), "low": low.astype(np.float32),
            "high": high.astype(np.float32), "covered": covered.astype(np.int32)}


def save_reference(folder, reference):
    path = folder / REFERENCE_FILE
    with fileutil.atomic_open(path, "wb") as fh:
        np.savez(fh, **reference)


def load_reference(folder):
    """The saved reference, or ``None`` for a model trained before explanations."""
    path = folder / REFERENCE_FILE
    if not path.is_file():
        return None
    with path.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files}


# -- global importance --------------------------------------------------------------


def global_importance(estimator, ds, reference):
    """Per-cell importance ``(t, f)``: the estimator's own, else mean |explain| on dev.

    Trees know their total gain per input; any other estimator is
    explained on a few dev (else training) examples.
    """
    own = getattr(estimator, "feature_importance", None)
    if callable(own):
        return np.abs(np.asarray(own(), dtype=np.float64)).reshape(ds.example_shape)
    split = ds.split("dev") if "dev" in ds.splits and len(ds.split("dev")) else \
        ds.split("training")
    n = min(len(split), IMPORTANCE_SAMPLE)
    if n == 0:
        return np.zeros(ds.example_shape)
    X = np.asarray(split.X[:n], dtype=np.float32)
    contrib = np.asarray(estimator.explain(X, reference["median"]), dtype=np.float64)
    return np.abs(contrib).mean(axis=0)


def cell_labels(ds):
    """``(labels (t, f) of str, per_cell)``: ``usr:max`` for aggregates, ``usr`` otherwise."""
    if ds.axis == "aggregate":
        return [[f"{feat}:{step}" for feat in ds.features] for step in ds.steps], True
    return [list(ds.features) for _ in ds.steps], False


def importance_table(ds, importance):
    """``[{"feature", "importance"}]`` sorted, shares summing to 1."""
    importance = np.asarray(importance, dtype=np.float64).reshape(ds.example_shape)
    labels, per_cell = cell_labels(ds)
    if per_cell:
        names = [labels[i][j] for i in range(len(labels)) for j in range(len(labels[i]))]
        values = importance.reshape(-1)
    else:
        names = list(ds.features)
        values = importance.sum(axis=0)
    total = values.sum()
    shares = values / total if total > 0 else values
    order = np.argsort(-shares, kind="mergesort")
    return [{"feature": names[i], "importance": round(float(shares[i]), 6)} for i in order]


def save_importance(folder, table):
    fileutil.atomic_write_json(folder / IMPORTANCE_FILE, table)


def load_importance(folder):
    path = folder / IMPORTANCE_FILE
    return fileutil.read_json(path) if path.is_file() else None


# -- values in the metric's own units ------------------------------------------------


def unscaler(ds):
    """A function undoing the dataset's final scaling, or ``None`` if it cannot.

    Values a person compares ("7.8 GB used") are the raw ones; the dataset
    stores them scaled by its last normalizer when that is ``scale``.
    """
    try:
        chain = ds.chain()
    except Exception:  # an old or third-party chain: values stay as stored
        LOG.debug("no chain to undo the scaling of %s", ds.name, exc_info=True)
        return None
    if not chain:
        return None
    last = chain[-1]
    if getattr(last, "name", None) != "scale" or not hasattr(last, "mean_"):
        return None if getattr(last, "stateful", False) else (lambda a: a)
    mean = np.asarray(last.mean_, dtype=np.float64)
    scale = np.asarray(last.scale_, dtype=np.float64)
    scale = np.where(scale > 0, scale, 1.0)

    def undo(values):
        return np.asarray(values, dtype=np.float64) * scale + mean

    return undo


def _round(value):
    value = float(value)
    if not np.isfinite(value):
        return None
    return float(f"{value:.4g}")


# -- the explanation record ----------------------------------------------------------


def explanation(contrib, example, length, ds, reference, predicted, *, unscale=None,
                method="occlusion", top=TOP):
    """The ``explanation`` of one prediction (a JSON-ready dict).

    ``{"class", "method", "features": [{"feature", "contribution", "value",
    "typical", "typical_low", "typical_high", "within_typical"}],
    "windows": [{"start_s", "end_s", "contribution", "features"}]}``;
    ``features`` are the cells (for aggregates) or features (time series)
    that pushed toward ``predicted``, those whose value is outside the
    passed runs' typical band first (see :func:`_rank`); ``windows`` (time
    series only) the stretches of the run that did.
    """
    contrib = np.asarray(contrib, dtype=np.float64).reshape(ds.example_shape)
    example = np.asarray(example, dtype=np.float64).reshape(ds.example_shape)
    if unscale is not None:
        raw = unscale(example)
        med, low, high = (unscale(reference[k]) for k in ("median", "low", "high"))
    else:
        raw = example
        med, low, high = (np.asarray(reference[k], np.float64) for k in
                          ("median", "low", "high"))
    out = {"class": predicted, "method": method, "features": [], "windows": []}
    labels, per_cell = cell_labels(ds)
    if per_cell:
        flat = contrib.reshape(-1)
        f = len(ds.features)
        items = []
        for idx in np.flatnonzero(flat > 0):
            i, j = divmod(int(idx), f)
            items.append({
                "feature": labels[i][j], "contribution": _round(flat[idx]),
                "value": _round(raw[i, j]), "typical": _round(med[i, j]),
                "typical_low": _round(low[i, j]), "typical_high": _round(high[i, j]),
                "within_typical": _within(raw[i, j], low[i, j], high[i, j])})
        out["features"] = _rank(items, top)
        return out
    # Time series: a feature's weight is summed over the run; its value is
    # compared over the run's own length (padding is not the run).
    steps = max(1, min(int(length or ds.example_shape[0]), ds.example_shape[0]))
    per_feature = contrib.sum(axis=0)
    items = []
    for j in np.flatnonzero(per_feature > 0):
        value, peak = raw[:steps, j].mean(), raw[:steps, j].max()
        band = low[:steps, j].mean(), high[:steps, j].mean()
        typical_peak = high[:steps, j].max()
        items.append({
            "feature": ds.features[j], "contribution": _round(per_feature[j]),
            "value": _round(value), "typical": _round(med[:steps, j].mean()),
            "typical_low": _round(band[0]), "typical_high": _round(band[1]),
            "peak": _round(peak), "typical_peak": _round(typical_peak),
            "within_typical": _within(value, *band) and bool(peak <= typical_peak)})
    out["features"] = _rank(items, top)
    interval = step_seconds(ds)
    spans = windows(ds.example_shape[0])
    scores = [(contrib[a:b].sum(), a, b) for a, b in spans]
    for score, a, b in sorted(scores, key=lambda s: -s[0])[:top]:
        if score <= 0:
            break
        cols = contrib[a:b].sum(axis=0)
        out["windows"].append({
            "start_s": _round(a * interval), "end_s": _round(b * interval),
            "contribution": _round(score),
            "features": [ds.features[j] for j in np.argsort(-cols)[:top] if cols[j] > 0]})
    return out


def _within(value, low, high):
    """Whether a value lies in the passed runs' typical band (10th-90th percentile)."""
    return bool(low <= value <= high)


def _rank(items, top):
    """The ``top`` items an operator should read first.

    A model's contribution says what moved its score, not what is unusual
    about the run: a tree can credit a cell whose value is exactly the
    typical one (its score is relative to all training runs, failures
    included).  Values outside the passed runs' typical band come first,
    by contribution; values within it only fill the remaining places, and
    carry ``within_typical`` so that they are never shown as the anomaly.
    """
    return sorted(items, key=lambda it: (it["within_typical"],
                                         -(it["contribution"] or 0.0)))[:top]


def step_seconds(ds):
    """Seconds per time step of a time-series dataset (1 when unknown)."""
    interval = (ds.config or {}).get("sample_interval")
    if not interval:
        return 1.0
    try:
        import pandas as pd

        return float(pd.Timedelta(pd.tseries.frequencies.to_offset(interval)).total_seconds())
    except (ValueError, TypeError):
        return 1.0


class Explainer:
    """Explains one model's predictions, loaded once with the model."""

    def __init__(self, estimator, dataset, reference):
        self.estimator = estimator
        self.dataset = dataset
        self.reference = reference
        self.unscale = unscaler(dataset)
        own = type(estimator).explain
        from ciml.base import Estimator

        self.method = "occlusion" if own is Estimator.explain else \
            getattr(estimator, "explain_method", estimator.name or "estimator")

    def __call__(self, example, length, predicted_index, predicted):
        contrib = self.estimator.explain(np.asarray(example, np.float32)[None],
                                         self.reference["median"], target=[predicted_index])
        return explanation(np.asarray(contrib)[0], example, length, self.dataset,
                           self.reference, predicted, unscale=self.unscale,
                           method=self.method)


def summary(explanation_record, top=TOP):
    """``"mem_used 7.8e9 (typ 3.1e9), ..."``: the table form of an explanation."""
    if not explanation_record:
        return ""
    parts = []
    for item in (explanation_record.get("features") or [])[:top]:
        if item.get("value") is None:
            parts.append(item["feature"])
        else:
            usual = ", in band" if item.get("within_typical") else ""
            parts.append(f"{item['feature']} {item['value']:.3g} "
                         f"(typ {item['typical']:.3g}{usual})")
    return ", ".join(parts)

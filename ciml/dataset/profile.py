"""How unusual a run is, compared with the training runs of its dataset.

A CI operator's third question ("is this run unusual for its job?") needs
no label and no model: the dataset already holds the job's history as
normalized examples.  At build time a *profile* of the training split is
stored with the dataset; at prediction time each new run is scored
against it, whatever the model predicts.

Each example is summarized as a short vector: per feature, its mean and
its maximum over the time steps (for a dataset that keeps the time axis)
or its aggregates (for an aggregated one), plus the log of the run's
length, since a run that is cut short or times out is unusual in itself.
The profile is the mean and standard deviation of each summary value over
the reference runs: the training runs that passed (what "normal" means to
a CI operator), or all training runs when fewer than ten passed.  A run's
*score* is the root mean square of its z-scores (each clipped to +-10, so
that one value cannot decide alone); its *percentile* is where that score
falls among the reference runs' scores; the features with the largest
z-scores say what is unusual.

Standard deviations are floored (:data:`MIN_SCALE`) because values that
never varied in training (zero padding past the longest run) would
otherwise turn any change into an infinite score.
"""

import math
import tempfile

import numpy as np

#: Bump when the summary or the score changes: older profiles are ignored.
VERSION = 1

#: Floor of a summary value's standard deviation (examples are normalized).
MIN_SCALE = 1e-3

#: z-scores are clipped to this size before they are combined.
MAX_Z = 10.0

#: Training-score quantiles kept to turn a score into a percentile.
QUANTILES = 1001

#: A run at or above this percentile of the training runs is ``unusual``.
DEFAULT_PERCENTILE = 99.0


def summary_labels(axis, steps, features):
    """The names of the summary values, e.g. ``mem_used:max`` and ``length``."""
    if axis == "time":
        labels = [f"{f}:mean" for f in features] + [f"{f}:max" for f in features]
    else:
        labels = [f"{f}:{s}" for s in steps for f in features]
    return labels + ["length"]


def summarize(X, lengths, axis):
    """Summary vectors ``(n, m)`` float64 of examples ``(n, t, f)`` and their lengths."""
    # No float64 copy of the whole chunk: a full-length chunk is large.
    X = np.asarray(X)
    if X.ndim == 2:
        X = X[None, ...]
    if axis == "time":
        parts = [X.mean(axis=1, dtype=np.float64), X.max(axis=1).astype(np.float64)]
    else:
        parts = [X.reshape(len(X), -1).astype(np.float64)]
    lengths = np.log1p(np.maximum(np.asarray(lengths, dtype=np.float64).reshape(-1), 0))
    return np.concatenate(parts + [lengths[:, None]], axis=1)


def _z(profile, summaries):
    center = np.asarray(profile["center"], dtype=np.float64)
    scale = np.asarray(profile["scale"], dtype=np.float64)
    return np.clip((summaries - center) / scale, -MAX_Z, MAX_Z)


def _scores(z):
    return np.sqrt(np.mean(z * z, axis=1))


def fit_profile(X, lengths, axis, steps, features, chunk=256, reference=None,
                reference_name="training runs"):
    """The profile of a training split, read ``chunk`` examples at a time.

    ``X`` may be a Zarr array larger than memory, and the runs many: the
    summaries (a few dozen float64 a run) go to a temporary file and are
    read back a chunk at a time, twice (their spread around the mean, then
    each run's score); only the scores, one number a run, are held.  The
    sums run row by row in the runs' order, as numpy's mean and standard
    deviation over the first axis of the whole matrix add, so the profile
    is the same to the bit.  ``reference`` (booleans, one per example)
    picks the runs that define normal, e.g. the passed ones.  Returns a
    JSON-able dict, or ``None`` when no run is left.
    """
    n = len(lengths)
    if reference is not None:
        reference = np.asarray(reference, dtype=bool)
    count = n if reference is None else int(reference.sum())
    if count == 0:
        return None
    with tempfile.TemporaryFile() as spill:
        total = width = None
        # ``X`` may be longer than ``lengths`` (rows reserved for skipped runs).
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            part = summarize(X[start:stop], lengths[start:stop], axis)
            if reference is not None:
                part = part[reference[start:stop]]
            if len(part):
                width = part.shape[1]
                total = _add_rows(total, part)
                spill.write(memoryview(np.ascontiguousarray(part)).cast("B"))
        center = total / count
        spread = None
        for part in _spilled(spill, width, chunk):
            spread = _add_rows(spread, np.square(part - center))
        scale = np.maximum(np.sqrt(spread / count), MIN_SCALE)
        profile = {"version": VERSION, "runs": count, "reference": reference_name,
                   "labels": summary_labels(axis, steps, features),
                   "center": center.tolist(), "scale": scale.tolist()}
        run_scores = np.concatenate([_scores(_z(profile, part))
                                     for part in _spilled(spill, width, chunk)])
    keep = min(QUANTILES, n)
    profile["scores"] = [float(v) for v in np.quantile(
        run_scores, np.linspace(0, 1, keep), method="linear")]
    return profile


def _add_rows(total, rows):
    """``total`` plus each of ``rows`` in turn (``None``: start from the first row).

    numpy reduces the first axis of a C-ordered matrix one row after the
    other; stacking the running total on top of the rows keeps that order
    across chunks.
    """
    if total is None:
        return rows.sum(axis=0)
    return np.concatenate([total[None, :], rows]).sum(axis=0)


def _spilled(spill, width, chunk):
    """The summaries written to ``spill``, ``chunk`` rows at a time."""
    spill.seek(0)
    size = width * 8
    while data := spill.read(chunk * size):
        yield np.frombuffer(data, dtype=np.float64).reshape(-1, width)


def scores(profile, X, lengths, axis):
    """The scores of a batch of examples ``(n, t, f)`` (no percentiles, no features)."""
    return _scores(_z(profile, summarize(X, lengths, axis)))


def threshold(profile, percentile=DEFAULT_PERCENTILE):
    """The score at ``percentile`` of the profiled runs."""
    return float(np.quantile(np.asarray(profile["scores"], dtype=np.float64), percentile / 100))


def score(profile, example, length, axis, percentile=DEFAULT_PERCENTILE, top=3):
    """How unusual one example is: ``score``, ``percentile``, ``unusual``, ``features``.

    ``percentile`` is the share of training runs that scored lower (ties
    count half); ``features`` are the ``top`` summary values furthest from
    the training runs, with their z-scores.
    """
    z = _z(profile, summarize(example, [length], axis))[0]
    value = float(_scores(z[None, :])[0])
    reference = np.asarray(profile["scores"], dtype=np.float64)
    below = np.searchsorted(reference, value, side="left")
    upto = np.searchsorted(reference, value, side="right")
    pct = 100.0 * (below + upto) / (2.0 * len(reference))
    order = np.argsort(-np.abs(z), kind="stable")[:top]
    labels = profile["labels"]
    return {
        "score": round(value, 4),
        "percentile": round(float(pct), 1),
        "unusual": bool(pct >= percentile),
        "features": [{"feature": labels[i], "z": round(float(z[i]), 2)} for i in order
                     if math.isfinite(z[i]) and z[i] != 0.0],
    }


def usable(profile):
    """Whether ``profile`` (from a dataset's attributes) can score runs."""
    return (isinstance(profile, dict) and profile.get("version") == VERSION
            and bool(profile.get("scores")))

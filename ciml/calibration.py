"""Probabilities that mean what they say: calibration on the dev split, and its measures.

A model's 0.8 should come true four times in five.  Class-weighted
training, early stopping and trees all bend that; a small map fitted on
the dev split (examples the weights never saw) straightens it:

* ``platt``: a logistic curve on the log-odds of the positive class
  (binary), or one temperature on the log-probabilities (multiclass);
* ``isotonic``: a non-decreasing step function of the positive class's
  probability (binary only: pool-adjacent-violators);
* ``auto`` (the default): whichever of ``none``, ``platt`` and ``isotonic``
  gives the lowest Brier score in a two-fold split of dev, so it is used
  only where it helps on examples it was not fitted on.

Measures: the Brier score (mean squared error of the probability vector)
and the expected calibration error (ECE: the gap between confidence and
accuracy, averaged over ten confidence bins, weighted by their size).
Everything is numpy and a calibration is a small JSON dict.
"""

import numpy as np

METHODS = ("auto", "none", "platt", "isotonic")
BINS = 10
_EPS = 1e-6


def brier(y, proba):
    """Mean over examples of the squared error of the whole probability vector."""
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if not len(y):
        return None
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def reliability(y, proba, bins=BINS):
    """Per confidence bin: ``{"low", "high", "n", "confidence", "accuracy"}`` (top class)."""
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    out = []
    if not len(y):
        return out
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append({"low": float(edges[b]), "high": float(edges[b + 1]),
                        "n": int(mask.sum()), "confidence": float(conf[mask].mean()),
                        "accuracy": float(correct[mask].mean())})
    return out


def ece(y, proba, bins=BINS):
    """Expected calibration error of the top-class confidence."""
    table = reliability(y, proba, bins)
    n = sum(b["n"] for b in table)
    if not n:
        return None
    return float(sum(b["n"] * abs(b["confidence"] - b["accuracy"]) for b in table) / n)


def measures(y, proba):
    return {"brier": brier(y, proba), "ece": ece(y, proba)}


# -- fitting -------------------------------------------------------------------------


def _logit(p):
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _fit_platt(score, target):
    """``(a, b)`` of ``sigmoid(a * score + b)`` by Newton's method on the log loss.

    Targets are smoothed as Platt proposed, so a separable dev split does not
    drive ``a`` to infinity.
    """
    n_pos = float(target.sum())
    n_neg = float(len(target) - n_pos)
    t = np.where(target, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(a, b):
        z = a * score + b
        # log(1 + e^z) - t z, stable for large |z|.
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(100):
        z = np.clip(a * score + b, -35, 35)
        p = 1 / (1 + np.exp(-z))
        g = p - t
        w = np.maximum(p * (1 - p), 1e-12)
        grad = np.array([np.sum(g * score), np.sum(g)])
        hess = np.array([[np.sum(w * score * score), np.sum(w * score)],
                         [np.sum(w * score), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        # Saturated probabilities make the Hessian tiny and the Newton step
        # huge: halve it until the loss goes down.
        scale = 1.0
        while scale > 1e-6 and loss(a - scale * step[0], b - scale * step[1]) > current:
            scale /= 2
        if scale <= 1e-6:
            break
        a, b = a - scale * step[0], b - scale * step[1]
        previous, current = current, loss(a, b)
        if previous - current < 1e-10 * max(1.0, abs(previous)):
            break
    return float(a), float(b)


def _fit_isotonic(score, target):
    """Pool-adjacent-violators: ``(thresholds, values)`` of a non-decreasing step map."""
    order = np.argsort(score, kind="mergesort")
    x, yv = score[order], target[order].astype(np.float64)
    # Blocks of (sum, count, max x); merge while a block's mean falls.
    sums, counts, highs = [], [], []
    for xi, yi in zip(x, yv):
        sums.append(yi)
        counts.append(1.0)
        highs.append(xi)
        while len(sums) > 1 and sums[-2] / counts[-2] >= sums[-1] / counts[-1]:
            s, c, h = sums.pop(), counts.pop(), highs.pop()
            sums[-1] += s
            counts[-1] += c
            highs[-1] = h
    values = [s / c for s, c in zip(sums, counts)]
    return [float(h) for h in highs], [float(v) for v in values]


def _fit_temperature(proba, y):
    logp = np.log(np.clip(proba, 1e-12, None))
    best, best_loss = 1.0, np.inf
    for t in np.logspace(-1.5, 1.5, 61):
        p = _softmax(logp / t)
        loss = -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)))
        if loss < best_loss:
            best, best_loss = float(t), loss
    return best


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit(method, y, proba, positive=1):
    """A calibration dict fitted on ``(y, proba)``; ``{"method": "none"}`` when not fittable."""
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = proba.shape[1] if proba.ndim == 2 else 0
    if method == "none" or len(y) < 2 or len(np.unique(y)) < 2:
        return {"method": "none"}
    if k == 2:
        target = y == positive
        score = proba[:, positive]
        if method == "platt":
            a, b = _fit_platt(_logit(score), target)
            return {"method": "platt", "a": a, "b": b, "positive": int(positive)}
        if method == "isotonic":
            xs, vs = _fit_isotonic(score, target)
            return {"method": "isotonic", "x": xs, "y": vs, "positive": int(positive)}
    elif method in ("platt", "temperature"):
        return {"method": "temperature", "t": _fit_temperature(proba, y)}
    return {"method": "none"}


def apply(calibration, proba):
    """``proba`` mapped through a calibration dict; rows still sum to 1."""
    proba = np.asarray(proba, dtype=np.float64)
    method = (calibration or {}).get("method", "none")
    if method == "none" or not len(proba):
        return proba
    if method == "temperature":
        return _softmax(np.log(np.clip(proba, 1e-12, None)) / calibration["t"])
    pos = int(calibration.get("positive", 1))
    score = proba[:, pos]
    if method == "platt":
        z = np.clip(calibration["a"] * _logit(score) + calibration["b"], -35, 35)
        p = 1 / (1 + np.exp(-z))
    elif method == "isotonic":
        xs = np.asarray(calibration["x"])
        vs = np.asarray(calibration["y"])
        idx = np.clip(np.searchsorted(xs, score, side="left"), 0, len(vs) - 1)
        p = vs[idx]
        # Keep some order inside a flat step: ties would make every run in a
        # block equally suspicious, and thresholds need a ranking.
        p = np.clip(p + 1e-6 * (score - 0.5), 0.0, 1.0)
    else:
        raise ValueError(f"unknown calibration {method!r}")
    out = np.empty_like(proba)
    out[:, pos] = p
    out[:, 1 - pos] = 1 - p
    return out


def choose(method, y, proba, positive=1, seed=0):
    """Fit ``method`` on dev; ``auto`` picks by two-fold Brier score (ties: ``none``)."""
    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if method != "auto":
        return fit(method, y, proba, positive)
    candidates = ["none", "platt"] + (["isotonic"] if proba.shape[1] == 2 else [])
    if len(y) < 20 or len(np.unique(y)) < 2:
        return {"method": "none"}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    folds = [order[: len(y) // 2], order[len(y) // 2:]]
    scores = {}
    for name in candidates:
        total = 0.0
        for a, b in ((0, 1), (1, 0)):
            cal = fit(name, y[folds[a]], proba[folds[a]], positive)
            total += brier(y[folds[b]], apply(cal, proba[folds[b]]))
        scores[name] = total
    best = min(candidates, key=lambda c: (scores[c] - (1e-4 if c == "none" else 0.0)))
    chosen = fit(best, y, proba, positive)
    chosen["chosen_by"] = {c: round(s / 2, 6) for c, s in scores.items()}
    return chosen

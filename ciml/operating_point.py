"""The operating point: calibrated probabilities and the threshold a verdict is made at.

A CI operator cares about one number first: of the runs ciml flags as
failed, how many really failed.  Arg-max at 0.5 buys recall with false
alarms when classes are weighted, and misses rare failures when they are
not, so ``train-model`` chooses the decision on the dev split:

* two classes: the threshold on the positive class's (calibrated)
  probability with the highest recall whose dev precision, and that of
  every higher threshold, is at least ``min_precision`` with 95%
  confidence (the Wilson lower bound of the flagged runs' precision), or
  whose false-alarm rate, among the negatives, is at most
  ``max_false_alarm_rate``.  When no threshold reaches the target,
  the one with the best lower bound is kept and ``met`` is false;
* more classes: a floor on the top probability; below it a run is
  ``uncertain`` (reported with its two most likely classes) rather than
  confidently wrong.  The floor is the lowest whose confident dev
  predictions are right at least ``min_precision`` of the time, keeping at
  least half of dev confident.

The decision is a small JSON dict stored with the model
(``operating_point.json``) and replayed by ``predict`` and ``watch``.
"""

import numpy as np

from ciml import calibration as cal
from ciml import metrics as metrics_mod

FILE = "operating_point.json"
UNCERTAIN = "uncertain"

#: The default target: of the runs flagged failed, at least 90% really failed.
DEFAULT_MIN_PRECISION = 0.9
#: Standard errors the dev precision's lower bound (Wilson) must clear the
#: target by: 1.645 is 95% one-sided confidence.
CONFIDENCE_Z = 1.645
#: Flagged dev runs below which a threshold's precision is too noisy to rule
#: out the thresholds under it.
MIN_FLAGGED = 5
#: The multiclass floor never leaves more than this share of dev uncertain.
MAX_UNCERTAIN = 0.5


def wilson_lower(successes, trials, z):
    """The Wilson score lower bound of a proportion (``z`` standard errors; 0: the share)."""
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.maximum(np.asarray(trials, dtype=np.float64), 1e-12)
    p = successes / trials
    if not z:
        return p
    z2 = z * z
    centre = p + z2 / (2 * trials)
    spread = z * np.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return (centre - spread) / (1 + z2 / trials)


def _binary_threshold(y_pos, score, min_precision=None, max_false_alarm_rate=None,
                      confidence_z=CONFIDENCE_Z):
    """``(threshold, met)`` over the distinct scores, highest recall meeting the target."""
    precision, recall, thresholds = metrics_mod.pr_curve(y_pos, score)
    if not len(thresholds):
        return 0.5, False
    n_neg = max(int((~y_pos).sum()), 1)
    tp = recall * max(int(y_pos.sum()), 1)
    flagged = np.array([(score >= t).sum() for t in thresholds], dtype=np.float64)
    fp = flagged - tp
    if max_false_alarm_rate is not None:
        ok = fp / n_neg <= max_false_alarm_rate + 1e-12
    else:
        target = min_precision if min_precision is not None else DEFAULT_MIN_PRECISION
        # Dev precision is an estimate from a few dozen flagged runs: demand
        # that its lower confidence bound meets the target, or the chosen
        # threshold sits where dev was lucky and test precision falls short.
        bound = wilson_lower(tp, flagged, confidence_z)
        ok = bound >= target - 1e-12
        # Precision is not monotonic in the threshold: a threshold where it
        # touches the target between two where it does not is a lucky spot
        # on dev, and test precision falls short.  Keep only thresholds
        # whose every higher threshold meets it too, ignoring the first few
        # flagged runs (one early false alarm must not rule out everything).
        settled = flagged >= min(MIN_FLAGGED, max(int(y_pos.sum()), 1))
        ok = np.logical_and.accumulate(ok | ~settled) & ok
    ok &= tp > 0
    if ok.any():
        # Highest recall; among equals the highest threshold (fewest alarms).
        idx = np.flatnonzero(ok)
        best = idx[np.lexsort((-thresholds[idx], -recall[idx]))[0]]
        return float(thresholds[best]), True
    if max_false_alarm_rate is None:
        # Not reachable with this much dev evidence: the most surely precise.
        best = int(np.argmax(np.where(tp > 0, bound, -1.0) + 1e-9 * recall))
    else:
        best = int(np.argmax(precision + 1e-9 * recall))
    return float(thresholds[best]), False


def _multiclass_floor(y, proba, min_precision):
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    floor = 0.0
    for t in np.unique(np.concatenate([[0.0], conf])):
        keep = conf >= t
        if keep.mean() < 1 - MAX_UNCERTAIN:
            break
        floor = float(t)
        if correct[keep].mean() >= min_precision:
            return floor, True
    return floor, False


def fit(y_dev, proba_dev, classes, *, calibration="auto", min_precision=None,
        max_false_alarm_rate=None, seed=0, confidence=0.95):
    """The decision dict for a model, from its raw dev probabilities."""
    classes = list(classes)
    y = np.asarray(y_dev, dtype=np.int64)
    proba = np.asarray(proba_dev, dtype=np.float64).reshape(len(y), len(classes))
    k = len(classes)
    positive = classes.index(metrics_mod.positive_class(classes)) if k == 2 else None
    calib = cal.choose(calibration or "auto", y, proba, positive=positive or 1, seed=seed) \
        if len(y) else {"method": "none"}
    calibrated = cal.apply(calib, proba)
    target = {"max_false_alarm_rate": max_false_alarm_rate} if max_false_alarm_rate \
        is not None else {"min_precision": min_precision if min_precision is not None
                          else DEFAULT_MIN_PRECISION}
    if max_false_alarm_rate is None and k == 2:
        target["confidence"] = confidence or 0.0
    decision = {"classes": classes, "calibration": calib, "target": target,
                "dev_examples": int(len(y))}
    if k == 2:
        decision["kind"] = "threshold"
        decision["positive_class"] = classes[positive]
        if len(y) and (y == positive).any():
            threshold, met = _binary_threshold(y == positive, calibrated[:, positive],
                                               min_precision, max_false_alarm_rate,
                                               _z(confidence))
        else:
            threshold, met = 0.5, False
        decision.update(threshold=threshold, met=met)
    else:
        decision["kind"] = "uncertain-below"
        floor, met = _multiclass_floor(y, calibrated, target.get("min_precision",
                                                                 DEFAULT_MIN_PRECISION)) \
            if len(y) else (0.0, False)
        decision.update(threshold=floor, met=met)
    if len(y):
        decision["dev"] = evaluate(decision, y, calibrated)
    return decision


def _z(confidence):
    """One-sided normal quantile of ``confidence`` (0 or ``None``: no margin)."""
    if not confidence:
        return 0.0
    from statistics import NormalDist

    return float(NormalDist().inv_cdf(float(confidence)))


def calibrate(decision, proba):
    return cal.apply((decision or {}).get("calibration"), proba)


def decide(decision, proba):
    """Class indices at the operating point; ``-1`` where a multiclass run is uncertain."""
    proba = np.asarray(proba, dtype=np.float64)
    if not decision or not len(proba):
        return proba.argmax(axis=1) if len(proba) else np.zeros(0, np.int64)
    if decision.get("kind") == "threshold":
        pos = decision["classes"].index(decision["positive_class"])
        return np.where(proba[:, pos] >= decision["threshold"], pos, 1 - pos)
    pred = proba.argmax(axis=1)
    return np.where(proba.max(axis=1) >= decision.get("threshold", 0.0), pred, -1)


def evaluate(decision, y, proba):
    """Metrics at the operating point on calibrated ``proba`` (binary: of the positive class)."""
    y = np.asarray(y, dtype=np.int64)
    pred = decide(decision, proba)
    out = {"threshold": decision.get("threshold")}
    if decision.get("kind") == "threshold":
        pos = decision["classes"].index(decision["positive_class"])
        flagged = pred == pos
        actual = y == pos
        tp = int((flagged & actual).sum())
        out.update({
            "flagged": int(flagged.sum()), "true_positives": tp,
            "precision": tp / int(flagged.sum()) if flagged.any() else None,
            "recall": tp / int(actual.sum()) if actual.any() else None,
            "false_alarm_rate": int((flagged & ~actual).sum()) / int((~actual).sum())
            if (~actual).any() else None,
            "accuracy": float((pred == y).mean()) if len(y) else None})
    else:
        sure = pred >= 0
        out.update({
            "uncertain": int((~sure).sum()),
            "uncertain_rate": float((~sure).mean()) if len(y) else None,
            "accuracy_when_sure": float((pred[sure] == y[sure]).mean()) if sure.any()
            else None})
    return out


def label(decision, proba_row, classes):
    """``(predicted, extra)`` for one run: the class name, or ``uncertain`` with its top two."""
    proba_row = np.asarray(proba_row, dtype=np.float64)
    idx = int(decide(decision, proba_row[None])[0])
    if idx >= 0:
        return classes[idx], {}
    top = np.argsort(-proba_row, kind="mergesort")[:2]
    return UNCERTAIN, {"candidates": [{"class": classes[int(i)],
                                       "probability": float(proba_row[int(i)])}
                                      for i in top]}


def _fmt(value):
    return "-" if value is None else f"{value:.4f}"


def metric_rows(metrics):
    """``(metric, model, baseline)`` rows for the operating point and calibration."""
    op = metrics.get("operating_point") or {}
    chosen = op.get("chosen")
    rows = []
    if chosen and "precision" in chosen:
        pos = (op.get("decision") or {}).get("positive_class", "positive")
        base = op.get("baseline") or {}
        half = op.get("at_0.5") or {}
        rows.append(("threshold (chosen on dev)", _fmt(chosen.get("threshold")), "-"))
        for key in ("precision", "recall", "false_alarm_rate"):
            rows.append((f"{pos} {key} at threshold", _fmt(chosen.get(key)),
                         _fmt(base.get(key))))
            rows.append((f"{pos} {key} at 0.5", _fmt(half.get(key)), _fmt(base.get(key))))
        rows.append((f"{pos} flagged at threshold", str(chosen.get("flagged")),
                     str(base.get("flagged", "-"))))
    elif chosen:
        rows.append(("uncertain below (chosen on dev)", _fmt(chosen.get("threshold")), "-"))
        rows.append(("uncertain rate", _fmt(chosen.get("uncertain_rate")), "-"))
        rows.append(("accuracy when sure", _fmt(chosen.get("accuracy_when_sure")), "-"))
    calib = op.get("calibration")
    if calib:
        raw = calib.get("uncalibrated") or {}
        rows.append(("calibration", str(calib.get("method")), "-"))
        rows.append(("brier score", _fmt(calib.get("brier")), "-"))
        rows.append(("brier score uncalibrated", _fmt(raw.get("brier")), "-"))
        rows.append(("expected calibration error", _fmt(calib.get("ece")), "-"))
        rows.append(("ece uncalibrated", _fmt(raw.get("ece")), "-"))
    for item in (metrics.get("feature_importance") or [])[:10]:
        rows.append((f"importance {item['feature']}", _fmt(item.get("importance")), "-"))
    return rows

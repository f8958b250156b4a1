"""Honest evaluation: per-class metrics beside a majority-class baseline, in numpy.

Accuracy alone misleads when 95% of runs pass: a model that always says
"passed" scores 95%.  So every evaluation reports, for the model and for a
majority-class baseline on the same examples, accuracy, per-class
precision/recall/F1, macro-F1 and the confusion matrix; for two classes also
ROC-AUC and PR-AUC (average precision) of the *failed* class.

The baseline predicts the most frequent class of the *training* split for
every example, with the training class frequencies as its probabilities:
it is what a model that learned nothing from the metrics would score.
"""

import numpy as np

from ciml.records import FAILED


def confusion_matrix(y_true, y_pred, n_classes):
    """``cm[i, j]``: examples of true class ``i`` predicted as ``j``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _safe_div(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_scores(cm):
    """Precision, recall, F1 and support per class, from a confusion matrix.

    A class never predicted has precision 0 (not undefined): a model that
    ignores the failed class must not look good for it.
    """
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def roc_auc(y_true, score):
    """Area under the ROC curve for binary labels (1 = positive), ties averaged.

    Computed as the Mann-Whitney U statistic: the probability that a random
    positive scores above a random negative.  ``None`` when only one class
    is present (the area is undefined).
    """
    y_true = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos = int(y_true.sum())
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # Average ranks over ties, 1-based.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(y_true, score):
    """PR-AUC as average precision: sum over thresholds of (R_k - R_{k-1}) * P_k.

    Tied scores form one threshold (no optimistic interpolation).  ``None``
    when there is no positive example.
    """
    y_true = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return None
    precision, recall, _ = pr_curve(y_true, score)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def pr_curve(y_true, score):
    """Precision and recall at each distinct threshold, highest threshold first."""
    y_true = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], y_true[order]
    tps = np.cumsum(t)
    fps = np.cumsum(~t)
    # The last index of each run of equal scores is a threshold.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.array([], int)
    tp, fp = tps[last].astype(np.float64), fps[last].astype(np.float64)
    n_pos = max(int(t.sum()), 1)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos
    return precision, recall, s[last]


def positive_class(classes):
    """The class whose detection ROC/PR-AUC measure: ``failed`` or else the second."""
    classes = list(classes)
    return FAILED if FAILED in classes else classes[-1]


def evaluate(y_true, proba, classes):
    """The metrics of predictions ``proba`` (n, n_classes) against ``y_true``."""
    classes = list(classes)
    k = len(classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64).reshape(len(y_true), k)
    y_pred = proba.argmax(axis=1) if len(y_true) else np.zeros(0, np.int64)
    cm = confusion_matrix(y_true, y_pred, k)
    precision, recall, f1, support = per_class_scores(cm)
    present = support > 0
    out = {
        "n": int(len(y_true)),
        "classes": classes,
        "accuracy": float(np.trace(cm) / len(y_true)) if len(y_true) else None,
        # Over the classes present in this split: a class with no example
        # has no recall to average.
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]),
                "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
    }
    if k == 2:
        pos = classes.index(positive_class(classes))
        truth = y_true == pos
        out["positive_class"] = classes[pos]
        out["roc_auc"] = roc_auc(truth, proba[:, pos])
        out["pr_auc"] = average_precision(truth, proba[:, pos])
    return out


def majority_baseline(y_train, n_classes):
    """The training class frequencies: the baseline's probabilities for any example."""
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=n_classes)
    prior = counts / max(counts.sum(), 1)
    return prior.astype(np.float64)


def evaluate_with_baseline(y_true, proba, classes, prior):
    """:func:`evaluate` of the model, with ``baseline``: the same for the prior."""
    result = evaluate(y_true, proba, classes)
    n = len(np.asarray(y_true))
    base = np.tile(np.asarray(prior, dtype=np.float64), (n, 1))
    # argmax of a constant row is the majority class for every example.
    result["baseline"] = evaluate(y_true, base, classes)
    result["baseline"]["kind"] = "majority class of the training split"
    return result


def _fmt(value):
    return "-" if value is None else f"{value:.4f}"


def metric_rows(metrics):
    """``(metric, model, baseline)`` rows for a table, from :func:`evaluate_with_baseline`."""
    base = metrics.get("baseline") or {}
    rows = [("examples", str(metrics.get("n")), str(base.get("n", "-")))]
    for key in ("accuracy", "macro_f1", "roc_auc", "pr_auc"):
        if key in metrics:
            label = key
            if key in ("roc_auc", "pr_auc"):
                label = f"{key} ({metrics.get('positive_class')})"
            rows.append((label, _fmt(metrics.get(key)), _fmt(base.get(key))))
    for cls, scores in (metrics.get("per_class") or {}).items():
        bscores = (base.get("per_class") or {}).get(cls, {})
        for key in ("precision", "recall", "f1"):
            rows.append((f"{cls} {key}", _fmt(scores.get(key)), _fmt(bscores.get(key))))
        rows.append((f"{cls} support", str(scores.get("support")),
                     str(bscores.get("support", "-"))))
    from ciml.operating_point import metric_rows as operating_rows

    return rows + operating_rows(metrics)

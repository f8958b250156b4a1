"""Evaluation metrics checked against values computed by hand."""

import numpy as np
import pytest

from ciml import metrics


def test_confusion_matrix_and_per_class_scores():
    # true:  p p p p f f ; predicted: p p p f f p
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 1, 1, 0]
    cm = metrics.confusion_matrix(y_true, y_pred, 2)
    assert cm.tolist() == [[3, 1], [1, 1]]
    precision, recall, f1, support = metrics.per_class_scores(cm)
    # passed: P = 3/4, R = 3/4; failed: P = 1/2, R = 1/2
    assert precision.tolist() == pytest.approx([0.75, 0.5])
    assert recall.tolist() == pytest.approx([0.75, 0.5])
    assert f1.tolist() == pytest.approx([0.75, 0.5])
    assert support.tolist() == [4, 2]


def test_never_predicted_class_scores_zero_not_nan():
    cm = metrics.confusion_matrix([0, 0, 1], [0, 0, 0], 2)
    precision, recall, f1, _ = metrics.per_class_scores(cm)
    assert precision.tolist() == pytest.approx([2 / 3, 0.0])
    assert recall.tolist() == pytest.approx([1.0, 0.0])
    assert f1.tolist() == pytest.approx([0.8, 0.0])


def test_roc_auc_by_hand():
    # positives score 0.9, 0.4; negatives 0.8, 0.3, 0.1.
    # Pairs (pos > neg): 0.9 beats 3, 0.4 beats 2 -> 5 of 6.
    y = [1, 0, 1, 0, 0]
    s = [0.9, 0.8, 0.4, 0.3, 0.1]
    assert metrics.roc_auc(y, s) == pytest.approx(5 / 6)


def test_roc_auc_ties_count_half_and_single_class_is_none():
    assert metrics.roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert metrics.roc_auc([1, 1], [0.2, 0.3]) is None


def test_average_precision_by_hand():
    # Ranked: 0.9 (pos), 0.8 (neg), 0.4 (pos), 0.3, 0.1 (neg).
    # Recall steps at rank 1 (P = 1) and rank 3 (P = 2/3): AP = 0.5*1 + 0.5*2/3.
    y = [1, 0, 1, 0, 0]
    s = [0.9, 0.8, 0.4, 0.3, 0.1]
    assert metrics.average_precision(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_average_precision_of_a_constant_score_is_the_prevalence():
    y = [1, 0, 0, 0]
    assert metrics.average_precision(y, [0.3] * 4) == pytest.approx(0.25)
    assert metrics.average_precision([0, 0], [0.1, 0.2]) is None


def test_evaluate_binary_with_baseline():
    classes = ["passed", "failed"]
    y_true = np.array([0, 0, 0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6],
                      [0.3, 0.7], [0.6, 0.4]])
    prior = metrics.majority_baseline([0, 0, 0, 1], 2)
    assert prior.tolist() == pytest.approx([0.75, 0.25])
    m = metrics.evaluate_with_baseline(y_true, proba, classes, prior)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.75 + 0.5) / 2)
    assert m["confusion_matrix"] == [[3, 1], [1, 1]]
    assert m["positive_class"] == "failed"
    # failed scores: pos 0.7, 0.4; neg 0.1 0.2 0.3 0.6 -> pairs won: 4 + 3 = 7 of 8
    assert m["roc_auc"] == pytest.approx(7 / 8)
    # ranked: .7 pos (P=1, R=.5) .6 neg .4 pos (P=2/3, R=1): AP = .5 + .5*2/3
    assert m["pr_auc"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    base = m["baseline"]
    assert base["accuracy"] == pytest.approx(4 / 6)
    assert base["confusion_matrix"] == [[4, 0], [2, 0]]
    # passed: P = 4/6, R = 1 -> F1 = 0.8; failed F1 = 0 -> macro 0.4
    assert base["macro_f1"] == pytest.approx(0.4)
    assert base["per_class"]["failed"]["recall"] == 0.0
    assert base["roc_auc"] == pytest.approx(0.5)
    assert base["pr_auc"] == pytest.approx(2 / 6)


def test_evaluate_multiclass_has_no_auc_and_macro_over_present_classes():
    classes = ["a", "b", "c"]
    y_true = [0, 1, 1, 0]
    proba = np.eye(3)[[0, 1, 0, 0]]
    m = metrics.evaluate(y_true, proba, classes)
    assert "roc_auc" not in m and "pr_auc" not in m
    assert m["per_class"]["c"]["support"] == 0
    # a: P 2/3 R 1 F1 .8; b: P 1 R .5 F1 2/3; c absent -> not averaged
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_metric_rows_put_model_beside_baseline():
    m = metrics.evaluate_with_baseline([0, 1], [[0.9, 0.1], [0.2, 0.8]], ["passed", "failed"],
                                       [0.5, 0.5])
    rows = {r[0]: r[1:] for r in metrics.metric_rows(m)}
    assert rows["accuracy"] == ("1.0000", "0.5000")
    assert rows["roc_auc (failed)"][0] == "1.0000"
    assert rows["failed recall"] == ("1.0000", "0.0000")

"""Calibration and the operating point, in numpy."""

import numpy as np

from ciml import calibration, operating_point


def _overconfident(n=400, seed=0):
    rng = np.random.default_rng(seed)
    p_true = rng.uniform(0, 1, n)
    y = (rng.uniform(0, 1, n) < p_true).astype(int)
    # Squash toward 0 and 1: right ranking, overconfident numbers.
    p = 1 / (1 + np.exp(-4 * np.log(p_true / (1 - p_true))))
    return y, np.stack([1 - p, p], axis=1)


def test_brier_and_ece_of_perfect_and_wrong_predictions():
    y = np.array([0, 1, 1])
    perfect = np.eye(2)[y]
    assert calibration.brier(y, perfect) == 0.0
    assert calibration.ece(y, perfect) == 0.0
    assert calibration.brier(y, 1 - perfect) == 2.0
    assert calibration.ece(y, 1 - perfect) == 1.0


def test_platt_and_isotonic_reduce_the_error_of_an_overconfident_model():
    y, proba = _overconfident()
    ty, tproba = _overconfident(seed=1)
    before = calibration.ece(ty, tproba)
    for method in ("platt", "isotonic"):
        cal = calibration.fit(method, y, proba)
        after = calibration.apply(cal, tproba)
        assert np.allclose(after.sum(axis=1), 1.0)
        assert calibration.ece(ty, after) < before, method
        assert calibration.brier(ty, after) < calibration.brier(ty, tproba), method


def test_auto_keeps_a_calibrated_model_as_it_is():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 300)
    y = (rng.uniform(0, 1, 300) < p).astype(int)
    chosen = calibration.choose("auto", y, np.stack([1 - p, p], axis=1))
    assert chosen["method"] in ("none", "platt")
    y2, proba2 = _overconfident()
    assert calibration.choose("auto", y2, proba2)["method"] != "none"


def test_temperature_for_multiclass():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(0, 1, (300, 3))
    logits[np.arange(300), y] += 1.0
    proba = np.exp(4 * logits)
    proba /= proba.sum(axis=1, keepdims=True)
    cal = calibration.fit("platt", y, proba)
    assert cal["method"] == "temperature" and cal["t"] > 1
    assert calibration.brier(y, calibration.apply(cal, proba)) < calibration.brier(y, proba)


def test_threshold_meets_the_precision_target_with_most_recall():
    # Scores: failures at 0.9, 0.8, 0.6, 0.3; passes at 0.7, 0.5, 0.2...
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 0, 1, 0, 1, 0, 0])
    proba = np.stack([1 - score, score], axis=1)
    d = operating_point.fit(y, proba, ["passed", "failed"], calibration="none",
                            min_precision=0.75, confidence=None)
    # 0.6 flags 4 runs, 3 failed: precision 0.75, recall 0.75 (0.3 gives 4/6).
    assert d["threshold"] == 0.6 and d["met"]
    assert d["dev"]["precision"] == 0.75 and d["dev"]["recall"] == 0.75
    strict = operating_point.fit(y, proba, ["passed", "failed"], calibration="none",
                                 min_precision=1.0, confidence=None)
    assert strict["threshold"] == 0.8 and strict["met"]
    alarms = operating_point.fit(y, proba, ["passed", "failed"], calibration="none",
                                 max_false_alarm_rate=0.25)
    assert alarms["threshold"] == 0.6 and alarms["dev"]["false_alarm_rate"] == 0.25


def test_a_lucky_spot_below_a_dip_is_not_chosen():
    # Precision from the top: 1, 1, 1, 1, 1, then a dip below 0.9 (two false
    # alarms), then back to exactly 0.9 by luck further down.
    y = np.array([1] * 5 + [0, 0] + [1] * 13 + [0] * 20)
    score = np.linspace(0.99, 0.01, len(y))
    proba = np.stack([1 - score, score], axis=1)
    d = operating_point.fit(y, proba, ["passed", "failed"], calibration="none",
                            min_precision=0.9, confidence=None)
    assert d["met"] and d["dev"]["flagged"] == 5 and d["dev"]["precision"] == 1.0


def test_precision_must_be_met_with_confidence():
    # 30 failures on top with two false alarms among them, then the rest.
    y = np.array([1] * 12 + [0] + [1] * 12 + [0] + [1] * 6 + [0] * 60)
    score = np.linspace(0.99, 0.01, len(y))
    proba = np.stack([1 - score, score], axis=1)
    plain = operating_point.fit(y, proba, ["passed", "failed"], calibration="none",
                                min_precision=0.9, confidence=None)
    sure = operating_point.fit(y, proba, ["passed", "failed"], calibration="none",
                               min_precision=0.9)
    # 32 flagged with 30 right is 0.94 on dev, but not 0.9 with 95% confidence.
    assert plain["met"] and plain["dev"]["flagged"] == 32
    assert sure["target"] == {"min_precision": 0.9, "confidence": 0.95}
    # Not reachable with 30 failures in dev: the surest threshold, reported unmet.
    assert sure["threshold"] > plain["threshold"] and sure["met"] is False
    assert sure["dev"]["precision"] > plain["dev"]["precision"]
    assert operating_point.wilson_lower(30, 32, 1.645) < 0.9 < 30 / 32


def test_unreachable_target_is_reported_not_met():
    score = np.array([0.9, 0.8, 0.1])
    y = np.array([0, 1, 0])
    d = operating_point.fit(y, np.stack([1 - score, score], 1), ["passed", "failed"],
                            calibration="none", min_precision=0.99)
    assert d["met"] is False or d["dev"]["precision"] >= 0.99


def test_decide_uses_the_failed_class_whatever_its_index():
    d = {"kind": "threshold", "threshold": 0.3, "classes": ["failed", "passed"],
         "positive_class": "failed", "calibration": {"method": "none"}}
    proba = np.array([[0.35, 0.65], [0.2, 0.8]])
    assert operating_point.decide(d, proba).tolist() == [0, 1]


def test_prediction_rows_record_the_verdict_not_the_arg_max():
    from ciml.model import _prediction_rows

    classes = ["a", "b", "c"]
    decision = {"kind": "uncertain-below", "threshold": 0.6, "classes": classes}
    proba = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1]])
    rows = list(_prediction_rows("ds", "test", ["r1", "r2"], [0, 1], proba, classes,
                                 decision))
    assert [r[4:6] for r in rows] == [["a", "a"], ["uncertain", "a"]]

    binary = {"kind": "threshold", "threshold": 0.8, "positive_class": "failed",
              "classes": ["passed", "failed"]}
    proba = np.array([[0.3, 0.7], [0.1, 0.9]])
    rows = list(_prediction_rows("ds", "dev", ["r1", "r2"], [1, 1], proba,
                                 ["passed", "failed"], binary))
    assert [r[4:6] for r in rows] == [["passed", "failed"], ["failed", "failed"]]

"""Explanations: the model-agnostic default, the reference, the explanation record."""

import numpy as np
import pytest

from ciml import explain
from ciml.testing.estimators import NearestCentroidEstimator, make_examples


def test_windows_cover_the_axis_once():
    assert explain.windows(4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    spans = explain.windows(100)
    assert len(spans) == explain.MAX_WINDOWS
    assert spans[0][0] == 0 and spans[-1][1] == 100
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_occlusion_finds_the_informative_feature_and_window():
    X, y = make_examples(80, 2, shape=(30, 3), seed=1)
    # Only the last steps of feature 0 carry the class.
    X[:, :20, 0] = np.random.default_rng(0).normal(0, 0.5, (80, 20))
    est = NearestCentroidEstimator().fit(X, y, classes=["passed", "failed"])
    reference = np.median(X[y == 0], axis=0)
    failed = X[y == 1][:5]
    contrib = est.explain(failed, reference)
    assert contrib.shape == failed.shape
    per_feature = contrib.sum(axis=1).mean(axis=0)
    assert per_feature.argmax() == 0
    per_step = contrib[..., 0].mean(axis=0)
    assert per_step[20:].sum() > 5 * abs(per_step[:20].sum())


def test_occlusion_of_a_typical_run_is_zero():
    X, y = make_examples(40, 2, seed=2)
    est = NearestCentroidEstimator().fit(X, y, classes=["a", "b"])
    assert np.allclose(est.explain(X[:1], X[0]), 0.0)


class _Dataset:
    def __init__(self, axis, steps, features, sample_interval=None):
        self.axis, self.steps, self.features = axis, steps, features
        self.config = {"sample_interval": sample_interval}
        self.name = "t"

    @property
    def example_shape(self):
        return (len(self.steps), len(self.features))


def test_aggregate_explanation_names_cells_with_values():
    ds = _Dataset("aggregate", ["mean", "max"], ["usr", "mem"])
    contrib = np.array([[0.1, 0.0], [0.5, -0.2]])
    example = np.array([[10.0, 1.0], [90.0, 2.0]])
    ref = {"median": np.array([[5.0, 1.0], [20.0, 2.0]]), "low": np.zeros((2, 2)),
           "high": np.full((2, 2), 30.0)}
    why = explain.explanation(contrib, example, 2, ds, ref, "failed")
    assert [f["feature"] for f in why["features"]] == ["usr:max", "usr:mean"]
    assert why["features"][0]["value"] == 90.0 and why["features"][0]["typical"] == 20.0
    assert why["windows"] == []
    assert explain.summary(why).startswith("usr:max 90 (typ 20)")


def test_a_typical_value_is_never_the_first_reason():
    # Tree contributions are relative to all training runs: the model may
    # credit most a cell whose value is exactly the passed runs' typical one.
    ds = _Dataset("aggregate", ["mean", "max"], ["usr", "mem"])
    contrib = np.array([[0.9, 0.05], [0.2, 0.0]])
    example = np.array([[20.0, 7.0], [95.0, 2.0]])
    ref = {"median": np.array([[20.0, 3.0], [60.0, 2.0]]),
           "low": np.array([[15.0, 2.5], [50.0, 1.0]]),
           "high": np.array([[25.0, 3.5], [70.0, 3.0]])}
    why = explain.explanation(contrib, example, 2, ds, ref, "failed")
    # Out of band first, by contribution; the typical one last, flagged.
    assert [(f["feature"], f["within_typical"]) for f in why["features"]] == [
        ("usr:max", False), ("mem:mean", False), ("usr:mean", True)]
    assert explain.summary(why) == ("usr:max 95 (typ 60), mem:mean 7 (typ 3), "
                                    "usr:mean 20 (typ 20, in band)")
    # With only typical values to show, they are shown, each flagged.
    why = explain.explanation(contrib, ref["median"], 2, ds, ref, "passed")
    assert [f["feature"] for f in why["features"]] == ["usr:mean", "usr:max", "mem:mean"]
    assert all(f["within_typical"] for f in why["features"])


def test_a_time_series_feature_with_a_peak_out_of_band_is_not_typical():
    ds = _Dataset("time", [str(i) for i in range(10)], ["usr", "mem"], "10s")
    contrib = np.zeros((10, 2))
    contrib[:, 0], contrib[:, 1] = 0.3, 0.1
    example = np.full((10, 2), 5.0)
    example[9, 1] = 9.0
    ref = {"median": np.full((10, 2), 5.0), "low": np.full((10, 2), 4.0),
           "high": np.full((10, 2), 6.0)}
    why = explain.explanation(contrib, example, 10, ds, ref, "failed")
    assert [(f["feature"], f["within_typical"]) for f in why["features"]] == [
        ("mem", False), ("usr", True)]


def test_time_series_explanation_has_windows_in_seconds():
    ds = _Dataset("time", [str(i) for i in range(24)], ["usr", "mem"], "10s")
    contrib = np.zeros((24, 2))
    contrib[20:22, 1] = 1.0
    example = np.zeros((24, 2))
    example[:, 1] = 5.0
    ref = {k: np.zeros((24, 2)) for k in ("median", "low", "high")}
    why = explain.explanation(contrib, example, 24, ds, ref, "failed")
    assert why["features"][0]["feature"] == "mem"
    assert why["features"][0]["value"] == 5.0
    window = why["windows"][0]
    assert window["start_s"] == 200.0 and window["end_s"] == 220.0
    assert window["features"] == ["mem"]


@pytest.mark.parametrize("bad", [None, {}])
def test_summary_of_nothing_is_empty(bad):
    assert explain.summary(bad) == ""


def test_prediction_table_shows_why_and_the_candidates_of_an_uncertain_run():
    from ciml.online import prediction_table

    records = [
        {"run_id": "r1", "predicted": "uncertain", "probabilities": {"a": 0.4, "b": 0.35,
                                                                    "c": 0.25},
         "candidates": [{"class": "a", "probability": 0.4},
                        {"class": "b", "probability": 0.35}],
         "explanation": {"features": [{"feature": "usr:max", "value": 90.0,
                                       "typical": 20.0}]}, "model": "d/e"},
        {"run_id": "r2", "predicted": "c", "probabilities": {"a": 0.1, "b": 0.1, "c": 0.8},
         "explanation": None, "model": "d/e"},
    ]
    columns, rows = prediction_table(records, ["a", "b", "c"])
    table = [dict(zip(columns, row)) for row in rows]
    assert table[0]["predicted"] == "uncertain (a or b)"
    assert table[0]["why"] == "usr:max 90 (typ 20)"
    assert table[1]["predicted"] == "c" and table[1]["why"] == ""


def test_the_reference_band_uses_only_the_runs_that_last_to_each_step():
    """Shorter passed runs are padded; their padding must not pull the band to 0."""
    import types

    from ciml.explain import fit_reference

    steps, features = 12, 2
    X = np.zeros((12, steps, features), np.float32)
    lengths = np.array([10] * 6 + [4] * 6)
    rng = np.random.default_rng(0)
    for k, n in enumerate(lengths):
        X[k, :n] = 5.0 + rng.normal(0, 0.1, (n, features))  # padding stays 0 after n
    class Split(types.SimpleNamespace):
        def __len__(self):
            return len(self.y)

    train = Split(X=X, y=np.zeros(12, np.int64), lengths=lengths)
    ds = types.SimpleNamespace(split=lambda name: train, classes=["passed", "failed"],
                               example_shape=(steps, features))
    ref = fit_reference(ds)
    assert ref["covered"].tolist() == [12] * 4 + [6] * 6 + [0] * 2
    # Where only the long runs go on, the band is theirs: around 5, never 0.
    for key in ("low", "median", "high"):
        assert (ref[key][:10] > 4.5).all() and (ref[key][:10] < 5.5).all(), key
    # Steps every run covers are what the plain percentile over all runs gives.
    np.testing.assert_array_equal(ref["median"][:4],
                                  np.percentile(X, 50, axis=0)[:4].astype(np.float32))
    # No run reaches the last two steps: the padded runs' statistics (0) stay.
    assert (ref["median"][10:] == 0).all()

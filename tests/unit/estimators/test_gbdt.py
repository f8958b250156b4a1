"""The LightGBM estimator: conformance, determinism, text model, explanations."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ciml.errors import CimlError
from ciml.testing import check_estimator
from ciml.testing.estimators import make_examples, zarr_array

lightgbm = pytest.importorskip("lightgbm")

from ciml_plugins.estimators.gbdt import GBDTEstimator  # noqa: E402

FAST = {"trees": 30, "min_data_in_leaf": 3}


def test_gbdt_conforms():
    check_estimator(GBDTEstimator, FAST)


def test_registered_as_gbdt():
    from ciml.plugins import get_manager

    assert get_manager().get("estimator", "gbdt") is GBDTEstimator


def test_learns_the_signal_binary_and_multiclass():
    X, y = make_examples(120, 2, seed=1)
    est = GBDTEstimator(**FAST).fit(X, y, classes=["passed", "failed"], seed=3)
    assert (est.predict(X) == y).mean() > 0.9
    X3, y3 = make_examples(150, 3, seed=2)
    est3 = GBDTEstimator(**FAST).fit(X3, y3, classes=["a", "b", "c"], seed=3)
    assert (est3.predict(X3) == y3).mean() > 0.9
    assert est3.predict_proba(X3).shape == (150, 3)


def test_same_seed_same_model_other_seed_other_model(tmp_path):
    X, y = make_examples(100, 2, seed=4)
    X = X + np.random.default_rng(0).normal(0, 1.0, X.shape).astype(np.float32)
    params = dict(FAST, feature_fraction=0.5, bagging_fraction=0.5)
    a = GBDTEstimator(**params).fit(X, y, classes=["p", "f"], seed=1)
    b = GBDTEstimator(**params).fit(X, y, classes=["p", "f"], seed=1)
    c = GBDTEstimator(**params).fit(X, y, classes=["p", "f"], seed=2)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    assert (tmp_path / "a" / "model.txt").read_text() == (tmp_path / "b" / "model.txt").read_text()
    assert not np.allclose(a.predict_proba(X), c.predict_proba(X))


def test_saved_as_lightgbm_text_and_no_pickle(tmp_path):
    X, y = make_examples(60, 2, seed=5)
    GBDTEstimator(**FAST).fit(X, y, classes=["p", "f"], seed=0).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.txt", "params.json"]
    assert (tmp_path / "model.txt").read_text().startswith("tree\n")
    json.loads((tmp_path / "params.json").read_text())


def test_corrupt_model_file_is_a_clear_error(tmp_path):
    X, y = make_examples(60, 2, seed=5)
    GBDTEstimator(**FAST).fit(X, y, classes=["p", "f"], seed=0).save(tmp_path)
    (tmp_path / "model.txt").write_text("<html>not a model</html>")
    with pytest.raises(CimlError, match="not a LightGBM text model"):
        GBDTEstimator.load(tmp_path)


def test_early_stopping_on_validation_keeps_the_best_round():
    X, y = make_examples(200, 2, seed=6)
    vX, _ = make_examples(80, 2, seed=7)
    # Labels unrelated to the examples: every tree only makes dev worse.
    vy = np.random.default_rng(0).integers(0, 2, 80)
    est = GBDTEstimator(trees=500, early_stopping=5, min_data_in_leaf=3).fit(
        X, y, classes=["p", "f"], validation=(vX, vy), seed=0)
    assert est.history_["trees"] < 500
    assert est.history_["val_loss"]


def test_time_series_examples_are_flattened_from_zarr(tmp_path):
    X, y = make_examples(64, 2, shape=(30, 4), seed=8)
    zX = zarr_array(X, tmp_path / "X.zarr", chunk=10)
    est = GBDTEstimator(**FAST).fit(zX, y, classes=["p", "f"], seed=0)
    assert np.allclose(est.predict_proba(zX), est.predict_proba(X))


def test_explain_points_at_the_informative_feature():
    X, y = make_examples(120, 2, shape=(4, 3), seed=9)
    est = GBDTEstimator(**FAST).fit(X, y, classes=["p", "f"], seed=0)
    contrib = est.explain(X[:20], reference=np.zeros((4, 3)))
    assert contrib.shape == (20, 4, 3)
    # Feature 0 carries the class: it dominates the push toward the prediction.
    per_feature = contrib.sum(axis=1).mean(axis=0)
    assert per_feature.argmax() == 0 and per_feature[0] > 0
    importance = est.feature_importance()
    assert importance.shape == (4, 3) and importance[:, 0].sum() > importance[:, 1:].sum()


def test_single_class_training_predicts_the_prior():
    X, _ = make_examples(20, 2, seed=10)
    est = GBDTEstimator(**FAST).fit(X, np.zeros(20, np.int64), classes=["p", "f"], seed=0)
    assert np.allclose(est.predict_proba(X), [[1.0, 0.0]])


def test_loading_the_plugin_does_not_import_lightgbm():
    code = ("import sys; from ciml.plugins import get_manager; "
            "get_manager().get('estimator', 'gbdt').description(); "
            "print('lightgbm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == "False"


def test_a_small_history_still_grows_trees():
    X, y = make_examples(20, 5, seed=12)
    est = GBDTEstimator(trees=20).fit(X, y, classes=list("abcde"), seed=0)
    assert (est.predict(X) == y).mean() > 0.5
    assert np.abs(est.explain(X[:3], reference=np.zeros((4, 3)))).sum() > 0

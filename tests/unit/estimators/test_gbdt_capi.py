"""A loaded gbdt model predicts through LightGBM's C API: LightGBM's numbers, bit for bit."""

import subprocess
import sys

import numpy as np
import pytest

from ciml.errors import CimlError
from ciml.testing.estimators import make_examples

lightgbm = pytest.importorskip("lightgbm")

from ciml_plugins.estimators import lightgbm_c  # noqa: E402
from ciml_plugins.estimators.gbdt import GBDTEstimator  # noqa: E402

FAST = {"trees": 30, "min_data_in_leaf": 3}


@pytest.mark.parametrize("classes", [["p", "f"], ["a", "b", "c", "d"]])
def test_same_bits_as_lightgbm_booster(tmp_path, classes):
    X, y = make_examples(150, len(classes), shape=(6, 5), seed=3)
    X = X + np.random.default_rng(1).normal(0, 0.5, X.shape).astype(np.float32)
    GBDTEstimator(**FAST).fit(X, y, classes=classes, seed=0).save(tmp_path)
    loaded = GBDTEstimator.load(tmp_path)
    assert isinstance(loaded.booster_, lightgbm_c.CBooster)
    reference = lightgbm.Booster(model_str=(tmp_path / "model.txt").read_text())
    flat = X.reshape(len(X), -1)
    for rows in (flat[:1], flat[:7], flat):
        for contrib in (False, True):
            ours = loaded.booster_.predict(rows, pred_contrib=contrib)
            theirs = reference.predict(rows, pred_contrib=contrib)
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
            assert ours.tobytes() == theirs.tobytes()
    # What gbdt makes of them is the same too.
    full = GBDTEstimator.load(tmp_path)
    full.booster_ = reference
    assert loaded.predict_proba(X).tobytes() == full.predict_proba(X).tobytes()
    assert loaded.explain(X[:5]).tobytes() == full.explain(X[:5]).tobytes()
    # The rest of a booster is LightGBM's own, made on first use.
    assert np.array_equal(loaded.feature_importance(), full.feature_importance())


def test_missing_library_falls_back_to_the_lightgbm_package(tmp_path, monkeypatch):
    X, y = make_examples(60, 2, seed=5)
    GBDTEstimator(**FAST).fit(X, y, classes=["p", "f"], seed=0).save(tmp_path)
    monkeypatch.setattr(lightgbm_c, "_library", lambda: None)
    loaded = GBDTEstimator.load(tmp_path)
    assert isinstance(loaded.booster_, lightgbm.Booster)
    (tmp_path / "model.txt").write_text("<html>not a model</html>")
    with pytest.raises(CimlError, match="not a LightGBM text model"):
        GBDTEstimator.load(tmp_path)


def test_loading_and_predicting_does_not_import_lightgbm(tmp_path):
    X, y = make_examples(60, 3, seed=5)
    GBDTEstimator(**FAST).fit(X, y, classes=["a", "b", "c"], seed=0).save(tmp_path)
    np.save(tmp_path / "X.npy", X[:3])
    code = ("import sys, numpy as np; "
            "from ciml_plugins.estimators.gbdt import GBDTEstimator; "
            f"est = GBDTEstimator.load({str(tmp_path)!r}); "
            f"X = np.load({str(tmp_path / 'X.npy')!r}); "
            "print(est.predict_proba(X).shape, est.explain(X).shape, "
            "sorted(m for m in ('lightgbm', 'pandas', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == "(3, 3) (3, 4, 3) []"

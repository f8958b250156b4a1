"""The public conformance kit, run over every installed estimator (scikit-learn's test_common)."""

import pytest

from ciml.plugins import get_manager
from ciml.testing import check_estimator
from ciml.testing.estimators import NearestCentroidEstimator

INSTALLED = [info.name for info in get_manager().all("estimator")]


def test_the_built_in_estimators_are_installed():
    assert {"dnn", "linear-svm", "gbdt"} <= set(INSTALLED)


@pytest.mark.tensorflow
@pytest.mark.slow
@pytest.mark.parametrize("name", INSTALLED)
def test_installed_estimator_conforms(name):
    check_estimator(get_manager().get("estimator", name))


def test_reference_estimator_conforms():
    check_estimator(NearestCentroidEstimator)


def test_kit_reports_a_broken_estimator():
    class Broken(NearestCentroidEstimator):
        """An estimator whose probabilities do not sum to one"""

        def predict_proba(self, X):
            return super().predict_proba(X) * 2

    with pytest.raises(AssertionError, match="check_fit_binary: probabilit"):
        check_estimator(Broken)


def test_kit_reports_fit_not_returning_self():
    class NoSelf(NearestCentroidEstimator):
        """An estimator whose fit returns nothing"""

        def fit(self, X, y, **kw):
            super().fit(X, y, **kw)

    with pytest.raises(AssertionError, match="fit\\(\\) must return self"):
        check_estimator(NoSelf)


class _PickledCentroid(NearestCentroidEstimator):
    """Saves itself with pickle, as the docs forbid"""

    suffix = "model.pkl"

    def save(self, path):
        import pathlib
        import pickle

        state = {"centroids": self.centroids_, "present": self.present_,
                 "classes": self.classes_, "input_shape": self.input_shape_}
        (pathlib.Path(path) / self.suffix).write_bytes(pickle.dumps(state))

    @classmethod
    def load(cls, path):
        import pathlib
        import pickle

        est = cls()
        for key, value in pickle.loads((pathlib.Path(path) / cls.suffix).read_bytes()).items():
            setattr(est, key + "_", value)
        return est


@pytest.mark.parametrize("suffix", ["model.pkl", "state.bin", "weights.dat"])
def test_kit_refuses_an_estimator_that_saves_a_pickle(suffix):
    cls = type("Pickled", (_PickledCentroid,), {"suffix": suffix,
                                                "__doc__": _PickledCentroid.__doc__})

    with pytest.raises(AssertionError) as exc:
        check_estimator(cls)
    message = str(exc.value)
    assert "check_save_writes_no_pickle" in message
    assert f"save() wrote a pickle ({suffix})" in message
    assert "ciml loads models without running code" in message


def test_kit_refuses_a_pickle_inside_an_archive_or_an_object_array():
    import pathlib

    import numpy as np

    class ObjectArray(NearestCentroidEstimator):
        """Saves an object array (a pickle inside .npy)"""

        def save(self, path):
            super().save(path)
            np.save(pathlib.Path(path) / "extra.npy", np.array([{"a": 1}], dtype=object),
                    allow_pickle=True)

    class Zipped(NearestCentroidEstimator):
        """Saves a pickle inside a zip archive"""

        def save(self, path):
            import pickle
            import zipfile

            super().save(path)
            with zipfile.ZipFile(pathlib.Path(path) / "bundle.zip", "w") as archive:
                archive.writestr("inner/state", pickle.dumps({"x": np.zeros(2)}))

    with pytest.raises(AssertionError, match=r"save\(\) wrote a pickle \(extra.npy\)"):
        check_estimator(ObjectArray)
    with pytest.raises(AssertionError, match=r"bundle.zip!inner/state"):
        check_estimator(Zipped)


def test_kit_refuses_a_load_that_unpickles():
    import pathlib
    import pickle

    class LoadsPickle(NearestCentroidEstimator):
        """Its saved files are clean, but load() unpickles something (and hides the error)"""

        @classmethod
        def load(cls, path):
            try:
                pickle.loads(pickle.dumps(pathlib.Path(path)))
            except Exception:
                pass
            return super().load(path)

    with pytest.raises(AssertionError, match=r"load\(\) unpickled data"):
        check_estimator(LoadsPickle)
    # The guard is lifted afterwards.
    assert pickle.loads(pickle.dumps([1])) == [1]

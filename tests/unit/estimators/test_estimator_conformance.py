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

"""Public testing kit for plugin authors: conformance checks, local servers, fixtures.

Everything a plugin's tests need is importable from here::

    from ciml.testing import check_estimator, ESTIMATOR_CHECKS, FAST_PARAMS

The submodules (``ciml.testing.estimators``, ``ciml.testing.sources``...)
hold the individual checks, each a plain function, for running a subset.
"""

from ciml.testing import estimators as _estimators
from ciml.testing import normalizers as _normalizers
from ciml.testing import sources as _sources
from ciml.testing import triggers as _triggers
from ciml.testing.estimators import check_estimator, make_dataset, make_examples
from ciml.testing.normalizers import check_normalizer, make_frames
from ciml.testing.sources import check_metric_source, check_result_source
from ciml.testing.triggers import check_trigger

#: The parameters :func:`check_estimator` fits with when given none
#: (``{"epochs": 2, "patience": 0}``; only those an estimator declares are passed).
FAST_PARAMS = _estimators.FAST_PARAMS
#: The estimator checks, in the order :func:`check_estimator` runs them.
ESTIMATOR_CHECKS = _estimators.CHECKS
#: The normalizer checks, in the order :func:`check_normalizer` runs them.
NORMALIZER_CHECKS = _normalizers.CHECKS
#: The result-source checks, in the order :func:`check_result_source` runs them.
RESULT_SOURCE_CHECKS = _sources.RESULT_SOURCE_CHECKS
#: The metric-source checks, in the order :func:`check_metric_source` runs them.
METRIC_SOURCE_CHECKS = _sources.METRIC_SOURCE_CHECKS
#: The trigger checks, in the order :func:`check_trigger` runs them.
TRIGGER_CHECKS = _triggers.TRIGGER_CHECKS

__all__ = [
    "ESTIMATOR_CHECKS", "FAST_PARAMS", "METRIC_SOURCE_CHECKS", "NORMALIZER_CHECKS",
    "RESULT_SOURCE_CHECKS", "TRIGGER_CHECKS", "check_estimator", "check_metric_source",
    "check_normalizer", "check_result_source", "check_trigger", "make_dataset",
    "make_examples", "make_frames",
]

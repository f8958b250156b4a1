"""Public testing kit for plugin authors: conformance checks, local servers, fixtures.

Everything a plugin's tests need is importable from here::

    from ciml.testing import check_estimator, ESTIMATOR_CHECKS, FAST_PARAMS

The submodules (:mod:`ciml.testing.estimators`, ...) hold the individual
checks, each a plain function, for running a subset.
"""

from ciml.testing.estimators import CHECKS as ESTIMATOR_CHECKS
from ciml.testing.estimators import FAST_PARAMS, check_estimator, make_dataset, make_examples
from ciml.testing.normalizers import CHECKS as NORMALIZER_CHECKS
from ciml.testing.normalizers import check_normalizer, make_frames
from ciml.testing.sources import (
    METRIC_SOURCE_CHECKS,
    RESULT_SOURCE_CHECKS,
    check_metric_source,
    check_result_source,
)
from ciml.testing.triggers import TRIGGER_CHECKS, check_trigger

__all__ = [
    "ESTIMATOR_CHECKS", "FAST_PARAMS", "METRIC_SOURCE_CHECKS", "NORMALIZER_CHECKS",
    "RESULT_SOURCE_CHECKS", "TRIGGER_CHECKS", "check_estimator", "check_metric_source",
    "check_normalizer", "check_result_source", "check_trigger", "make_dataset",
    "make_examples", "make_frames",
]

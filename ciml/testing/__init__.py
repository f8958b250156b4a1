"""Public testing kit for plugin authors: local servers, conformance checks, fixtures."""
from ciml.testing.estimators import check_estimator, make_dataset  # noqa: F401
from ciml.testing.normalizers import check_normalizer  # noqa: F401
from ciml.testing.sources import check_metric_source, check_result_source  # noqa: F401

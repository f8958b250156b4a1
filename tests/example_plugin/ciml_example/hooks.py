"""The hook implementations ciml calls: this package's only entry point.

Each hook registers one class; ciml checks that it derives from the right
base class and makes it available by its ``name`` (``--result-source jsonl``,
``--estimator majority``...).  Nothing heavy is imported here.
"""

from ciml.hookspecs import hookimpl
from ciml_example.estimator import MajorityEstimator
from ciml_example.normalizer import ClipNormalizer
from ciml_example.sources import CsvMetricSource, JsonlResultSource
from ciml_example.trigger import LinesTrigger


@hookimpl
def ciml_register_result_sources(register):
    register(JsonlResultSource)


@hookimpl
def ciml_register_metric_sources(register):
    register(CsvMetricSource)


@hookimpl
def ciml_register_normalizers(register):
    register(ClipNormalizer)


@hookimpl
def ciml_register_estimators(register):
    register(MajorityEstimator)


@hookimpl
def ciml_register_triggers(register):
    register(LinesTrigger)

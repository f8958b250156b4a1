"""The base classes a plugin author codes against, one per plugin kind."""

from ciml.base.component import (
    Component,
    Parameter,
    bounded_int,
    non_negative_float,
    non_negative_int,
    optional,
    parse_bool,
    positive_float,
    positive_int,
)
from ciml.base.config import Secret, Settings, settings
from ciml.base.estimator import Estimator
from ciml.base.metric_source import FetchedMetrics, MetricSource
from ciml.base.normalizer import Normalizer, normalized_length
from ciml.base.result_source import ResultSource
from ciml.base.trigger import Trigger

#: Plugin kinds: the name used on the command line, its base class and the
#: registration hook that fills it.
KINDS: dict[str, tuple[type, str]] = {
    "result_source": (ResultSource, "ciml_register_result_sources"),
    "metric_source": (MetricSource, "ciml_register_metric_sources"),
    "normalizer": (Normalizer, "ciml_register_normalizers"),
    "estimator": (Estimator, "ciml_register_estimators"),
    "trigger": (Trigger, "ciml_register_triggers"),
}

__all__ = [
    "KINDS", "Component", "Estimator", "FetchedMetrics", "MetricSource",
    "Normalizer", "Parameter", "ResultSource", "Secret", "Settings", "Trigger", "bounded_int",
    "non_negative_float", "non_negative_int", "normalized_length", "optional", "parse_bool",
    "positive_float", "positive_int", "settings",
]

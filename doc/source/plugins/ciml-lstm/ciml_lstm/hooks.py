"""The module the ``ciml.plugins`` entry point names: registers the estimator."""

from ciml.hookspecs import hookimpl
from ciml_lstm.estimator import LSTMEstimator


@hookimpl
def ciml_register_estimators(register):
    register(LSTMEstimator)

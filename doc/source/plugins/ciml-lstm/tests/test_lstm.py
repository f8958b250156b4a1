"""ciml's conformance kit, run over the LSTM estimator."""

from ciml_lstm.estimator import LSTMEstimator

from ciml.testing import check_estimator


def test_lstm_conforms():
    check_estimator(LSTMEstimator, params={"epochs": 2, "units": 8})

"""ciml-lstm: a long short-term memory estimator for ciml."""

"""ciml: learn from a CI system's history and predict why new runs fail."""

# The one place the version is written; setup.cfg reads it with ``attr:``.
__version__ = "0.1.0"

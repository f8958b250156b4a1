"""ciml-example: one small, useful implementation of each ciml plugin kind."""

__version__ = "1.0.0"

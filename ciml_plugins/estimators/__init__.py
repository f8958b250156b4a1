"""Built-in estimators (the only place TensorFlow is imported)."""

"""Built-in triggers."""

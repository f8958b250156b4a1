"""Built-in result sources."""

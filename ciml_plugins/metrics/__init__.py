"""Built-in metric sources."""

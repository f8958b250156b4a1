"""ciml's built-in plugins, loaded only through the ciml.plugins entry points."""

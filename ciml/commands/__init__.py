"""The cliff commands of ``ciml``, one module per object; each is thin."""

"""``ciml serve``: the web dashboard and REST API over runs, predictions and models."""

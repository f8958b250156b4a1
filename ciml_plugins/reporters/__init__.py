"""Built-in reporters: plugins that act on predictions (comment on a review...)."""

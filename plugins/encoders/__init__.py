"""Built-in encoder plugins."""

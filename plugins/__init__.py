"""Built-in x2i plugins (installed as the package x2i_plugins)."""

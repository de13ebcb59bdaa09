"""The `x2i` command line (installed as the package x2i_cli)."""

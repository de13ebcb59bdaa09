"""The lab as an x2i plugin (entry point `shapes_lab` in the group `x2i`): adds the `x2i shapes` commands."""
from x2i_core import hookimpl


@hookimpl
def register_commands(cli):
    """`x2i shapes ...`: evaluate, train the world's models, write the report."""
    from .commands import shapes  # click only; torch loads inside each command

    cli.add_command(shapes, "shapes")

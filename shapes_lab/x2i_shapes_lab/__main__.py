"""`python -m x2i_shapes_lab ...` from shapes_lab/: the `x2i shapes` commands without installing the lab."""
from .commands import shapes

if __name__ == "__main__":
    shapes(prog_name="python -m x2i_shapes_lab")

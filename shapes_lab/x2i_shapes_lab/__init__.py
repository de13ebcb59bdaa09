"""The shapes world's lab: scene generator, training, evaluation, probes and report of x2i's built-in world.

The world's inference presets and shipped weights live in the x2i distribution (x2i_plugins.worlds.shapes);
everything here only reads them through the plugin registry. The lab is used from a checkout (or an editable
install), so the ablation AlignNets, the training logs and the docs it writes are folders of that checkout.
"""
from pathlib import Path

LAB = Path(__file__).resolve().parents[1]  # shapes_lab/
ABLATIONS_DIR = LAB / "weights" / "ablations"  # AlignNets of the ablation table, one folder each
LOGS_DIR = LAB / "logs"  # <model>/train_log.csv written by `x2i align` for the shipped and ablation AlignNets
DOCS_DIR = LAB.parent / "docs"  # where `x2i shapes report` writes shapes_world.md and shapes_grid.png


def shipped_folder(kind: str, name: str) -> Path:
    """The checkpoint folder a registered preset of the world loads (e.g. kind "encoder", name "shapes-mllm")."""
    from x2i_core import get_registry

    return Path(get_registry().get(kind, name).pretrained)

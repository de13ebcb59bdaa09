"""Tiny encoder + AlignNet folders for the adapter CLI tests (the backbone folder comes from each test module)."""
import torch

from x2i_core.alignnet import AlignNet
from x2i_core.plugins import load_component
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM
from x2i_plugins.encoders.qwen25vl.tiny import write_tiny_qwen25vl


_WRITTEN: dict[str, tuple[str, str]] = {}


def write_encoder_and_aligner(root) -> tuple[str, str]:
    """(tiny Qwen2.5-VL folder, an AlignNet folder that fits it and the tiny Flux); written once per test session
    (the first caller's `root` keeps them), so the adapter and preset CLI tests share them."""
    if "world" in _WRITTEN:
        return _WRITTEN["world"]
    qwen = write_tiny_qwen25vl(root / "qwen", seed=0)
    enc = load_component("encoder", "qwen2.5-vl", qwen, device="cpu")
    torch.manual_seed(0)
    AlignNet(num_layers=enc.num_layers, hidden_size=enc.hidden_size, prompt_dim=PROMPT_DIM, pooled_dim=POOLED_DIM,
             encoder="qwen2.5-vl", backbone="flux").save_pretrained(root / "align")
    _WRITTEN["world"] = qwen, str(root / "align")
    return _WRITTEN["world"]


def generate_args(qwen: str, flux: str, align: str, out) -> list[str]:
    """`x2i generate` arguments for the tiny models at 16x16, 1 step, writing `out`."""
    return ["generate", "--encoder", "qwen2.5-vl", "--encoder-path", qwen, "--backbone", "flux", "--backbone-path",
            flux, "--aligner", align, "--device", "cpu", "--steps", "1", "--width", "16", "--height", "16",
            "-o", str(out), "a red circle"]

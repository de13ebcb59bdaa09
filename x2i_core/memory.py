"""Memory levels a user picks (`--memory high|balanced|low|lowest`) and what each does to the encoder.

The backbone's half of each level lives with its plugin (FLUX: plugins/backbones/flux/memory.py);
docs/performance.md has the table. Importing this module does not import torch (the CLI lists the levels).
"""
from __future__ import annotations

from .errors import InputError

#: from fastest (everything resident on the accelerator) to smallest peak memory
MEMORY_LEVELS = ("high", "balanced", "low", "lowest")
#: one line per level, for --help and docs
MEMORY_SUMMARIES = {
    "high": "every model resident on the accelerator, bf16",
    "balanced": "each model on the accelerator only while it runs (model CPU offload); same images as high",
    "low": "balanced + the transformer stored in fp8 (computed in bf16) + VAE tiling for large images",
    "lowest": "group offload of transformer and encoder (weights streamed block by block) + fp8 + VAE tiling",
}
#: what the old `--offload` flag means
OFFLOAD_LEVEL = "balanced"


def resolve_memory_level(memory: str | None = None, offload: bool = False) -> str:
    """The level to use: `memory` if given, else "balanced" for `offload=True`, else "high"; InputError if unknown."""
    if memory is None:
        return OFFLOAD_LEVEL if offload else "high"
    level = str(memory).lower()
    if level not in MEMORY_LEVELS:
        raise InputError(f"unknown memory level {memory!r}; use one of {', '.join(MEMORY_LEVELS)}")
    if offload and level == "high":
        raise InputError("--offload means --memory balanced; it cannot be combined with --memory high")
    return level


def place_encoder(encoder, level: str, device):
    """Put the encoder where `level` wants it; returns the device to move it to for each encode (or None).

    high: resident on `device`. balanced/low: waits on the CPU, brought to `device` for encoding and sent
    back after (the encoder leaves the GPU after encoding). lowest: diffusers' group offload streams each
    layer's weights in as it runs, so the encoder never occupies the accelerator whole.
    """
    import torch

    device = torch.device(device)
    if level == "high":
        return None
    if level in ("balanced", "low"):
        if device.type == "cpu":
            return None  # already in main memory
        encoder.to("cpu")
        return device
    from diffusers.hooks import apply_group_offloading

    # The encoder interface does not list its modules; every torch module it holds is its weights.
    for module in {id(m): m for m in vars(encoder).values() if isinstance(m, torch.nn.Module)}.values():
        module.to("cpu")
        apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                               offload_type="leaf_level", use_stream=device.type == "cuda")
    return None

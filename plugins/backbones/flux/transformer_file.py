"""A FLUX transformer given as one `.safetensors` file (a fine-tune) on a base folder's VAE and scheduler.

diffusers' FluxTransformer2DModel.from_single_file reads the diffusers key layout and the original BFL layout
(`double_blocks.*`, also under ComfyUI's `model.diffusion_model.` prefix); the architecture comes from the
base's transformer/config.json, so nothing is fetched for a local base folder.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import FluxTransformer2DModel

from x2i_core import CheckpointError, InputError, first_line


def check_transformer_file(path: str) -> Path:
    """InputError unless `path` is an existing .safetensors file (cheap: run before anything loads)."""
    file = Path(path).expanduser()
    if file.suffix.lower() != ".safetensors":
        raise InputError(f"--transformer-file must be a .safetensors file (never a pickle), got {file.name}")
    if not file.is_file():
        raise InputError(f"transformer file not found: {file}")
    return file


def load_transformer_file(path: str, base: str, dtype: torch.dtype, **kwargs) -> FluxTransformer2DModel:
    """The transformer in `path`, built with the architecture of `base`'s transformer (folder or hub id);
    `kwargs` go to from_single_file (a quantization_config)."""
    file = check_transformer_file(path)
    try:
        return FluxTransformer2DModel.from_single_file(str(file), config=str(base), subfolder="transformer",
                                                       torch_dtype=dtype, **kwargs)
    except Exception as exc:  # wrong architecture, truncated file, unknown key layout ...
        raise CheckpointError(
            f"cannot load the transformer file {file.name} on the architecture of {base}: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc

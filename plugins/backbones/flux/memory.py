"""The FLUX backbone's half of each memory level (x2i_core MEMORY_LEVELS), built from diffusers' own tools.

    level     transformer + VAE placement               transformer weights   VAE
    high      resident on the accelerator                bf16                  plain decode
    balanced  model CPU offload (one model at a time)    bf16                  tiled above its sample size
    low       model CPU offload                          fp8, computed bf16    tiled above its sample size
    lowest    group offload (transformer block by block) fp8, computed bf16    tiled + sliced

docs/performance.md has the same table with measured figures. On CPU, model CPU offload has nothing to do
(diffusers raises without an accelerator), so it is skipped with a note; group offload, fp8 layerwise casting
and tiling run on CPU as well, which is what the tests exercise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FluxPipeline

from x2i_core import InputError, MEMORY_LEVELS


@dataclass(frozen=True)
class FluxMemoryRecipe:
    """What one memory level does to a FluxPipeline's transformer and VAE."""

    placement: str  # "resident" | "model_offload" | "group_offload"
    fp8_transformer: bool  # store transformer weights as float8_e4m3fn, upcast per layer (layerwise casting)
    vae_tiling: bool  # decode large images tile by tile (only above the VAE's sample_size: 1024 px for FLUX)
    vae_slicing: bool = False  # decode a batch one image at a time


RECIPES = {
    "high": FluxMemoryRecipe("resident", fp8_transformer=False, vae_tiling=False),
    "balanced": FluxMemoryRecipe("model_offload", fp8_transformer=False, vae_tiling=True),
    "low": FluxMemoryRecipe("model_offload", fp8_transformer=True, vae_tiling=True),
    "lowest": FluxMemoryRecipe("group_offload", fp8_transformer=True, vae_tiling=True, vae_slicing=True),
}
assert tuple(RECIPES) == MEMORY_LEVELS  # one recipe per level the core knows


def recipe_for(level: str) -> FluxMemoryRecipe:
    """The recipe of a level name; InputError for an unknown one."""
    if level not in RECIPES:
        raise InputError(f"unknown memory level {level!r}; use one of {', '.join(RECIPES)}")
    return RECIPES[level]


def apply_memory_level(pipe: FluxPipeline, level: str, device: torch.device, compute_dtype: torch.dtype) -> list[str]:
    """Place and cast the pipeline's transformer and VAE for `level`; returns notes for the user."""
    recipe = recipe_for(level)
    device = torch.device(device)
    notes: list[str] = []
    transformer, vae = pipe.transformer, pipe.vae
    if recipe.fp8_transformer:
        # diffusers keeps norms and embeddings in the compute dtype (the model's skip patterns)
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
    if recipe.vae_tiling:
        vae.enable_tiling()
    if recipe.vae_slicing:
        vae.enable_slicing()
    if recipe.placement == "resident":
        pipe.to(device)
    elif recipe.placement == "model_offload":
        if device.type == "cpu":
            notes.append(f"--memory {level}: model offload has no effect on CPU (the models already live in main memory)")
        else:
            pipe.enable_model_cpu_offload(device=device)
    else:
        # block by block, the next block's weights copied on a side stream while this one computes
        stream = device.type == "cuda"
        transformer.to("cpu")
        transformer.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                         offload_type="block_level", num_blocks_per_group=1, use_stream=stream)
        vae.to(device)  # 168 MB: not worth streaming
    return notes


#: --quantize choices: bitsandbytes int8 (LLM.int8) or 4-bit NF4 weights for the transformer (the `quant` extra)
QUANTIZE = ("int8", "nf4")


def quantization_config(quantize: str | None, level: str, device: torch.device, compute_dtype: torch.dtype):
    """diffusers' BitsAndBytesConfig for the transformer, or None; InputError for what cannot work (one line)."""
    if quantize is None:
        return None
    if quantize not in QUANTIZE:
        raise InputError(f"unknown quantisation {quantize!r}; use one of {', '.join(QUANTIZE)}")
    if torch.device(device).type != "cuda":
        raise InputError("--quantize needs a CUDA GPU (bitsandbytes kernels); on CPU use --memory low (fp8 storage)")
    if recipe_for(level).fp8_transformer or recipe_for(level).placement == "group_offload":
        raise InputError(f"--quantize replaces the fp8 storage of --memory {level}: use it with --memory high or balanced")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InputError("--quantize needs bitsandbytes: pip install 'x2i[quant]'") from None
    from diffusers import BitsAndBytesConfig

    if quantize == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)


def place_extra_model(module: torch.nn.Module, level: str, device: torch.device, compute_dtype: torch.dtype) -> None:
    """A model that runs next to the transformer at every step (a ControlNet): fp8 storage where the level stores
    the transformer in fp8, streamed block by block at `lowest`, else resident on the accelerator (moving it in and
    out at every step, as model offload would, costs more than it saves)."""
    recipe = recipe_for(level)
    device = torch.device(device)
    if recipe.fp8_transformer:
        module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
    if recipe.placement == "group_offload":
        module.to("cpu")
        module.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                    offload_type="block_level", num_blocks_per_group=1, use_stream=device.type == "cuda")
    else:
        module.to(device)


def is_offloaded(level: str) -> bool:
    """True when the transformer's weights do not stay on the accelerator (decode must not trust vae.device)."""
    return recipe_for(level).placement != "resident"

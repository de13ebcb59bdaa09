"""LoraAdapter: a FLUX LoRA loaded into the backbone's transformer with diffusers' FluxLoraLoaderMixin machinery.

`FluxPipeline.lora_state_dict` reads the file and converts the kohya (`lora_unet_..._lora_down/up` + alpha) and
XLabs (`double_blocks.N.processor.qkv_lora1.down`) layouts to diffusers' peft keys; `load_lora_into_transformer`
adds it as a named peft adapter. Several LoRAs are several adapters on one transformer, weighted together with
`set_adapters` (the weight of each is its scale); `fuse` merges it into the weights for faster steps.

A LoRA made for another architecture is refused in one line (IncompatibleError) before anything changes: every
target module must exist in this transformer with the LoRA's in/out widths. diffusers' own loader would instead
try to expand some transformer weights to fit (meant for FLUX Control LoRAs), which x2i never wants silently.
Only .safetensors files are read (no pickle).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import FluxPipeline

from x2i_core import Adapter, CheckpointError, IncompatibleError, InputError, first_line

#: where a peft LoRA key splits into the target module and the LoRA part
_LORA_PART = re.compile(r"\.(lora_[AB]|lora\.(?:down|up)|lora_(?:down|up))(?:\.[^.]+)*\.weight$")
_DEFAULT_FILE = "pytorch_lora_weights.safetensors"


def _locate(pretrained: str) -> tuple[str, str | None]:
    """(folder or hub id, weight file name) for lora_state_dict; CheckpointError for missing or pickled files."""
    path = Path(pretrained).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"only .safetensors LoRA files are read (never pickles), got {path.name}")
        return str(path.parent), path.name
    if path.is_dir():
        if (path / _DEFAULT_FILE).is_file():
            return str(path), _DEFAULT_FILE
        files = sorted(p.name for p in path.glob("*.safetensors"))
        if len(files) == 1:
            return str(path), files[0]
        what = f"several .safetensors files ({', '.join(files)}): give one file" if files else "no .safetensors file"
        raise CheckpointError(f"the LoRA folder {path} holds {what}")
    if pretrained.startswith((".", "/", "~")) or path.suffix or pretrained.count("/") != 1:
        raise CheckpointError(f"LoRA file or folder not found: {pretrained}")
    return pretrained, None  # a hub id: diffusers finds pytorch_lora_weights.safetensors there


def _target(key: str) -> tuple[str, str] | None:
    """('transformer_blocks.0.attn.to_q', 'lora_A') for a converted transformer key, None for other keys."""
    if not key.startswith("transformer."):
        return None
    match = _LORA_PART.search(key)
    if match is None:
        return None
    return key[len("transformer."):match.start()], match.group(1)


def check_fits(state_dict: dict, transformer, source: str) -> None:
    """IncompatibleError unless every LoRA target exists in the transformer with matching widths."""
    modules = dict(transformer.named_modules())
    missing, wrong = [], []
    for key, tensor in state_dict.items():
        found = _target(key)
        if found is None:
            continue
        name, part = found
        module = modules.get(name)
        if module is None or not hasattr(module, "in_features"):
            missing.append(name)
            continue
        down = part in ("lora_A", "lora.down", "lora_down")
        expected = module.in_features if down else module.out_features
        got = tensor.shape[1] if down else tensor.shape[0]
        if got != expected:
            wrong.append(f"{name} ({got} vs {expected})")
    if missing or wrong:
        detail = (f"{len(missing)} target module(s) it does not have, e.g. {missing[0]}" if missing
                  else f"other widths, e.g. {wrong[0]}")
        raise IncompatibleError(f"the LoRA {source} was made for another architecture: this transformer has {detail}")


class LoraAdapter(Adapter):
    """One LoRA file as a named peft adapter on the Flux transformer; its `scale` is its set_adapters weight."""

    name = "lora"

    def __init__(self, state_dict: dict, network_alphas, metadata, *, source: str, scale: float = 1.0,
                 fuse: bool = False):
        self.state_dict, self.network_alphas, self.metadata = state_dict, network_alphas, metadata
        self.source, self.scale, self.fuse = source, float(scale), bool(fuse)
        self.adapter_name: str | None = None

    @classmethod
    def from_pretrained(cls, pretrained: str, *, scale: float = 1.0, fuse: bool = False, **options) -> "LoraAdapter":
        """Read a LoRA (.safetensors file, folder or hub id) in any layout diffusers converts; nothing is applied yet."""
        if options:
            raise InputError(f"unknown LoRA option(s): {', '.join(sorted(options))}")
        where, weight_name = _locate(str(pretrained))
        try:
            state_dict, alphas, metadata = FluxPipeline.lora_state_dict(
                where, weight_name=weight_name, use_safetensors=True, return_alphas=True, return_lora_metadata=True)
        except Exception as exc:  # unreadable file, a layout the converters reject, real-FLUX widths in a converter
            why = first_line(exc)
            why = type(exc).__name__ if why == type(exc).__name__ else f"{type(exc).__name__}: {why}"
            raise IncompatibleError(f"cannot read the LoRA {pretrained} as a LoRA for this FLUX transformer "
                                    f"(made for another architecture or size? diffusers' reader says {why})") from exc
        if not any(_target(k) for k in state_dict):
            raise IncompatibleError(f"the LoRA {pretrained} has no FLUX transformer weights (keys like "
                                    f"{next(iter(state_dict), '?')}): it was made for another architecture")
        return cls(state_dict, alphas, metadata, source=str(pretrained), scale=scale, fuse=fuse)

    def apply(self, backbone) -> None:
        """Check the shapes, add the adapter, weight every LoRA on the transformer, fuse if asked.

        Works on a backbone already set to a memory level: diffusers takes model/group offload hooks off and puts
        them back around the load (`_pipeline`), and fp8-stored layers are lifted to the compute dtype while peft
        builds the LoRA layers (peft gives them the base weight's dtype), so the LoRA itself stays unquantised."""
        transformer = backbone.transformer
        check_fits(self.state_dict, transformer, self.source)
        taken = set(getattr(transformer, "peft_config", {}) or {})
        self.adapter_name = next(f"x2i_lora_{i}" for i in range(len(taken) + 1) if f"x2i_lora_{i}" not in taken)
        stored = _lift_fp8(self.state_dict, transformer, backbone.dtype)
        try:
            FluxPipeline.load_lora_into_transformer(
                dict(self.state_dict), network_alphas=self.network_alphas, transformer=transformer,
                adapter_name=self.adapter_name, metadata=self.metadata, _pipeline=backbone.pipe)
        finally:
            for param, dtype in stored.items():  # fp8 -> compute -> fp8 is exact
                param.data = param.data.to(dtype)
        weights = _weights(transformer)
        weights[self.adapter_name] = self.scale
        transformer.set_adapters(list(weights), list(weights.values()))
        if self.fuse and stored:
            self.fuse = False
            backbone.notes.append("--lora-fuse skipped: the transformer is stored in fp8 at this memory level, "
                                  "so the LoRA runs unfused")
        if self.fuse:
            transformer.fuse_lora(adapter_names=[self.adapter_name])
        transformer.requires_grad_(False)

    def remove(self, backbone) -> None:
        """Unfuse (if fused) and delete this adapter; the others keep their weights."""
        transformer = backbone.transformer
        if self.adapter_name is None:
            return
        if self.fuse:
            transformer.unfuse_lora()
        transformer.delete_adapters(self.adapter_name)
        weights = _weights(transformer)
        weights.pop(self.adapter_name, None)
        if weights:
            transformer.set_adapters(list(weights), list(weights.values()))
        self.adapter_name = None


def _lift_fp8(state_dict: dict, transformer, dtype) -> dict:
    """Cast the fp8 parameters of the LoRA's target modules to `dtype`; returns {parameter: its fp8 dtype}."""
    fp8 = {torch.float8_e4m3fn, torch.float8_e5m2}
    modules = dict(transformer.named_modules())
    stored = {}
    for name in {found[0] for found in map(_target, state_dict) if found}:
        for param in modules[name].parameters(recurse=False):
            if param.dtype in fp8:
                stored[param] = param.dtype
                param.data = param.data.to(dtype)
    return stored


def _weights(transformer) -> dict[str, float]:
    """The weight of each x2i LoRA on this transformer (kept on the module, as set_adapters needs them all at once)."""
    if "_x2i_lora_weights" not in transformer.__dict__:
        transformer.__dict__["_x2i_lora_weights"] = {}
    return transformer.__dict__["_x2i_lora_weights"]

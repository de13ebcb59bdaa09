"""Convert the reference X2I AlignNet checkpoints into AlignNet folders (config.json + safetensors).

Reference formats (method.md): a state dict `diffusion_pytorch_model.bin`, or hub files such as
`qwen2.5-vl-7b_proj.pt` holding {"config": ..., "state_dict": ...}. Both are pickles, so they are
read with torch.load(weights_only=True) only: tensors and plain containers, never arbitrary objects.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .alignnet import AlignNet
from .errors import CheckpointError, first_line
from .outputs import check_output_dir, save_pretrained

# reference key -> our parameter name
REFERENCE_KEYS = {
    "conv.weight": "layer_fusion.weight",
    "conv.bias": "layer_fusion.bias",
    "cha_scale": "layer_scale",
    "mlp.layernorm.weight": "norm.weight",
    "mlp.layernorm.bias": "norm.bias",
    "mlp.projector.0.weight": "project_in.weight",
    "mlp.projector.2.weight": "project_out.weight",
    "mlp.fc.1.weight": "pooled_proj.weight",
    "mlp.fc.1.bias": "pooled_proj.bias",
}


def read_reference_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a reference checkpoint (.bin/.pt/.pth pickle, or .safetensors)."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".safetensors"))
        if not candidates:
            raise CheckpointError(f"no .bin, .pt, .pth or .safetensors file in {path}")
        path = candidates[0]
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {first_line(exc)}") from None
    else:
        obj = load_weights_only(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    # DDP-wrapped saves prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights_only(path: str | Path) -> Any:
    """torch.load(weights_only=True) on the CPU; any failure is one CheckpointError line.

    torch's own refusal text advises re-running with weights_only=False, i.e. running whatever code the file
    carries; x2i never does that, so the message says what the file holds and how to make a safe one instead.
    """
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            lines = text.partition("WeightsUnpickler error:")[2].strip().splitlines()
            first = lines[0].strip() if lines else ""
            if first.startswith("Unsupported global:"):  # keep "GLOBAL print", drop torch's allow-list advice
                found = first.removeprefix("Unsupported global:").split(" was not")[0].strip()
                raise CheckpointError(
                    f"{path} holds pickled Python objects, not only tensors ({found}); refusing to unpickle objects, "
                    f"which could run code from the file: save the weights as a plain state dict of tensors or as "
                    f".safetensors"
                ) from None
            found = f" ({first})" if first and "weights_only" not in first else ""
            raise CheckpointError(
                f"{path} cannot be read as tensors only{found}: it is not a torch checkpoint, or it pickles more "
                f"than tensors; refusing to unpickle objects, which could run code from the file"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({_safe_line(exc)})") from None
    except Exception as exc:  # truncated or not a torch file at all: zip, pickle and runtime errors alike
        raise CheckpointError(f"{path} is not a readable checkpoint ({_safe_line(exc)})") from None


def _safe_line(exc: BaseException) -> str:
    line = first_line(exc)
    return type(exc).__name__ if "weights_only" in line else f"{type(exc).__name__}: {line}"


def alignnet_from_reference(
    state_dict: dict[str, torch.Tensor],
    *,
    masked_pool: bool = False,
    encoder: str | None = None,
    backbone: str | None = None,
) -> AlignNet:
    """Build an AlignNet whose shapes are read off the reference tensors, and load them.

    masked_pool defaults to False: the reference averaged the pooled embedding over padding too, and
    its released weights were trained that way.
    """
    unknown = sorted(set(state_dict) - set(REFERENCE_KEYS))
    if unknown:
        raise CheckpointError(f"not a reference X2I AlignNet: unexpected keys {unknown[:4]}")
    try:
        project_in = state_dict["mlp.projector.0.weight"]
        pooled = state_dict["mlp.fc.1.weight"]
    except KeyError as exc:
        raise CheckpointError(f"not a reference X2I AlignNet: missing {exc.args[0]!r}") from None
    if "conv.weight" in state_dict:
        fusion, num_layers, kernel = "conv", state_dict["conv.weight"].shape[1], state_dict["conv.weight"].shape[-1]
    elif "cha_scale" in state_dict:
        fusion, num_layers, kernel = "scale", state_dict["cha_scale"].shape[1], 5
    else:
        raise CheckpointError("not a reference X2I AlignNet: neither conv.weight nor cha_scale found")
    model = AlignNet(
        num_layers=int(num_layers),
        hidden_size=int(project_in.shape[1]),
        prompt_dim=int(project_in.shape[0]),
        pooled_dim=int(pooled.shape[0]),
        fusion=fusion,
        kernel_size=int(kernel),
        masked_pool=masked_pool,
        encoder=encoder,
        backbone=backbone,
        prompt_template="reference",  # the encoder must give the inputs these weights were trained on
    )
    ours = {REFERENCE_KEYS[k]: v.float() for k, v in state_dict.items()}
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"reference checkpoint does not fill the AlignNet: missing {missing}, unexpected {unexpected}")
    return model


def convert_reference(
    source: str | Path,
    output: str | Path,
    *,
    masked_pool: bool = False,
    encoder: str | None = None,
    backbone: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Read a reference checkpoint and write an AlignNet folder; returns the folder."""
    output = check_output_dir(output)  # before reading: a bad -o fails first and leaves nothing
    if output.exists() and any(output.iterdir()):
        raise CheckpointError(f"output folder {output} is not empty")
    model = alignnet_from_reference(
        read_reference_state_dict(source), masked_pool=masked_pool, encoder=encoder, backbone=backbone
    )
    return save_pretrained(model.to(dtype), output)

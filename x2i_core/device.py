"""Device and dtype defaults: bf16 on a GPU, fp32 on CPU."""
from __future__ import annotations

import torch

from .errors import InputError

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
          "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def resolve(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """Fill in missing device/dtype; dtype may be given as a string ("bf16", "fp16", "fp32").

    Unknown names are InputError (users type them on the command line).
    """
    try:
        device = torch.device(device) if device is not None else default_device()
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} was asked for, but torch sees no CUDA GPU here (use --device cpu)")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; use bf16, fp16 or fp32")
        dtype = DTYPES[dtype]
    return device, dtype or default_dtype(device)

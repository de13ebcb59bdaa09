"""Device and dtype defaults: bf16 on a GPU, fp32 on CPU."""
from __future__ import annotations

import torch


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def resolve(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """Fill in missing device/dtype; dtype may be given as a string ("bf16", "fp16", "fp32")."""
    device = torch.device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                 "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use bf16, fp16 or fp32")
        dtype = names[dtype]
    return device, dtype or default_dtype(device)

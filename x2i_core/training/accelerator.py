"""The accelerate setup shared by every trainer (align, train-lora, train-lightcontrol) and the teacher-cache builder."""
from __future__ import annotations

import torch

from ..device import resolve as resolve_device


def make_accelerator(cfg):
    """An Accelerator on cfg.device; cfg.mixed_precision "auto" = bf16 on CUDA, none on CPU (cfg: any config with
    device, dtype and mixed_precision, e.g. a TrainingConfig)."""
    import os

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    resolve_device(cfg.device, cfg.dtype)  # an unknown or absent device fails here, before any model loads
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and hasattr(AcceleratorState, "_reset_state"):
        # accelerate keeps one global state per process; a second in-process run (Python API, tests) may
        # ask for other settings. Only single-process: a distributed process group must stay as it is.
        AcceleratorState._reset_state(reset_partial_state=True)
    cuda = torch.cuda.is_available() and (cfg.device is None or str(cfg.device).startswith("cuda"))
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if cuda else "no"
    return Accelerator(mixed_precision=precision, cpu=not cuda)

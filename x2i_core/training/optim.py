"""Optimiser and learning-rate schedule shared by the trainers."""
from __future__ import annotations

import math
from functools import partial

import torch

from ..errors import InputError


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """LR factor after `step` updates: linear warm-up to 1 over `warmup` updates, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(cfg, params):
    """AdamW (torch) or 8-bit AdamW (bitsandbytes, InputError if it is not installed) over the params that need grad;
    cfg: optimizer, lr, weight_decay."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except Exception as exc:
            raise InputError(
                f"--optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes; CUDA only): {type(exc).__name__}"
            ) from None
        return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg, optimizer):
    """Linear warm-up over cfg.warmup updates, then cosine to 0 at cfg.steps (counts optimizer updates)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(cosine_with_warmup, warmup=cfg.warmup, total=cfg.steps))

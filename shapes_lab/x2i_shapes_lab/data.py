"""Batches of rendered scenes and captions as tensors (training split only, deterministic per seed)."""
from __future__ import annotations

import random

import numpy as np
import torch

from .world import Scene, caption, render_array, scenes


def images_to_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) arrays -> float (B, 3, H, W) in [-1, 1], as diffusers VAEs expect."""
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def tensor_to_arrays(x: torch.Tensor) -> list[np.ndarray]:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (H, W, 3) arrays."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [a.permute(1, 2, 0).numpy() for a in x]


def scene_batch(seed: int, n: int, split: str = "train") -> tuple[list[Scene], torch.Tensor]:
    """n training scenes and their images."""
    sc = scenes(seed, n, split=split)
    return sc, images_to_tensor([render_array(s) for s in sc])


def captions_for(sc: list[Scene], lang: str, seed: int) -> list[str]:
    """One grammar caption per scene."""
    rng = random.Random(seed)
    return [caption(s, lang, rng) for s in sc]


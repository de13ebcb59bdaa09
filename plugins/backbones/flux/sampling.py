"""Flux sampling as plain functions (after black-forest-labs/flux's prepare/denoise): schedule, noise, packing, the loop.

Every generation path of the Flux backbone runs `denoise` below: plain, true CFG, img2img (the loop starts part
way down the schedule), inpaint/outpaint (blending after each step) and every adapter guide. What differs between
paths is the `velocity` function and the `after_step` callback the backbone passes in.

The arithmetic follows diffusers 0.42's FluxPipeline / FlowMatchEulerDiscreteScheduler exactly, so that an image
made before this loop existed is made again bit for bit (tests/test_engine_regression.py):
- the schedule: sigmas linspace(1, 1/N, N), shifted by mu = a linear function of the image sequence length
  (the scheduler's set_timesteps does the shift); timesteps = sigmas * 1000, plus a terminal sigma 0;
- the transformer gets t / 1000 (t cast to the latents' dtype first), the guidance as float32;
- an Euler step is x + (sigma_next - sigma) * v computed in float32, cast back to v's dtype;
- img2img starts at index int(N - N * strength) and noises the clean latents as sigma * noise + (1 - sigma) * x0;
- inpainting re-noises the init latents to the next sigma after each step and keeps them where the mask is 0.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor


def image_seq_shift(seq_len: int, config) -> float:
    """mu of the dynamic time shift: linear in the image sequence length between the scheduler's two anchors."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return seq_len * slope + (base_shift - slope * base_len)


def schedule(scheduler, num_steps: int, image_seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps (N,), sigmas (N + 1,)) for N steps, as FluxPipeline asks the scheduler for them."""
    config = scheduler.config
    sigmas = None if config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / num_steps, num_steps)
    mu = image_seq_shift(image_seq_len, config)  # ignored by schedulers without dynamic shifting
    if sigmas is None:
        scheduler.set_timesteps(num_steps, device=device, mu=mu)
    else:
        scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)
    return scheduler.timesteps, scheduler.sigmas


def first_step(num_steps: int, strength: float) -> int:
    """Index where img2img starts: strength 1 runs every step, 0.5 the last half (as diffusers' get_timesteps)."""
    run = min(num_steps * strength, num_steps)
    return int(max(num_steps - run, 0))


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, 2R, 2C') VAE latents -> (B, R*C', 4C) tokens, one per 2x2 patch (channel-major inside a token)."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of `pack`: (B, rows*cols, 4C) -> (B, C, 2 rows, 2 cols)."""
    b, _, c4 = tokens.shape
    c = c4 // 4
    patches = tokens.view(b, rows, cols, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, c, rows * 2, cols * 2)


def image_ids(rows: int, cols: int, device, dtype, *, index: float = 0.0) -> torch.Tensor:
    """(rows*cols, 3) rotary position ids of the image tokens: (index, row, col); Kontext marks its source image 1."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


def draw_noise(batch: int, channels: int, rows: int, cols: int, generator, device, dtype) -> torch.Tensor:
    """Packed Gaussian noise (B, rows*cols, 4*channels), drawn per generator exactly as FluxPipeline draws it."""
    noise = randn_tensor((batch, channels, rows * 2, cols * 2), generator=generator, device=device, dtype=dtype)
    return pack(noise)


def noised(clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The flow-matching interpolation at `sigma` (0 = clean, 1 = noise)."""
    sigma = sigma.to(device=clean.device, dtype=clean.dtype)
    return sigma * noise + (1.0 - sigma) * clean


def euler_step(latents: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """x + (sigma_next - sigma) * v, in float32, back in v's dtype."""
    step = (sigma_next - sigma).to(latents.device)
    return (latents.to(torch.float32) + step * velocity).to(velocity.dtype)


def denoise(
    velocity: Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    after_step: Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The one loop: for each timestep, v = velocity(latents, i, t), an Euler step to the next sigma, then
    after_step(latents, i, sigma_next). `timesteps` (N,) and `sigmas` (N + 1,) are the part of the schedule run."""
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        v = velocity(latents, i, t)
        latents = euler_step(latents, v, sigmas[i], sigmas[i + 1])
        if after_step is not None:
            latents = after_step(latents, i, sigmas[i + 1])
        if on_step is not None:
            on_step(i + 1, total)
    return latents

"""Per-step randomness for alignment, as pure functions of (seed, step, micro-step, rank).

Deriving every generator from counters (instead of advancing one global generator) makes a resumed run
draw exactly the noise and timesteps an uninterrupted one would, whatever happened before the restart.
"""
from __future__ import annotations

import math

import torch

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def step_seed(seed: int, step: int, micro: int = 0, rank: int = 0) -> int:
    """A well-mixed 63-bit seed for one (step, micro-step, rank)."""
    x = (seed * _MIX[0] + step * _MIX[1] + micro * _MIX[2] + rank * 0x2545F4914F6CDD1D) & (2**64 - 1)
    x ^= x >> 31
    x = (x * _MIX[1]) & (2**64 - 1)
    x ^= x >> 29
    return x & (2**63 - 1)


def step_generator(seed: int, step: int, micro: int = 0, rank: int = 0, device="cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded by `step_seed`."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, micro, rank))


def flux_shift_mu(image_seq_len: int, base_len: int = 256, max_len: int = 4096, base: float = 0.5, top: float = 1.15) -> float:
    """FLUX's resolution-dependent shift: linear in the image token count (0.5 at 256 tokens, 1.15 at 4096)."""
    slope = (top - base) / (max_len - base_len)
    return base + slope * (image_seq_len - base_len)


def sample_timesteps(mode: str, batch: int, generator: torch.Generator, image_seq_len: int = 4096) -> torch.Tensor:
    """(batch,) sigmas in (0, 1] on the CPU: "one" = 1 (pure noise, the reference), "uniform" = U(0, 1],
    "shifted" = U(0, 1] pushed toward 1 as FLUX's sampler schedule is at this resolution."""
    if mode == "one":
        return torch.ones(batch)
    u = 1.0 - torch.rand(batch, generator=generator)  # (0, 1]; generator: a CPU one
    if mode == "uniform":
        return u
    if mode == "shifted":
        shift = math.exp(flux_shift_mu(image_seq_len))
        return shift / (shift + (1.0 / u - 1.0))
    raise ValueError(f"unknown timestep mode {mode!r}")


def intermediate_latents(noise: torch.Tensor, sigma: torch.Tensor, clean: torch.Tensor | None) -> torch.Tensor:
    """x_sigma = (1 - sigma) * clean + sigma * noise (flow matching); with no clean estimate, the noise itself.

    There are no images in text-only alignment: `clean` is either None (pure noise at every sigma: simple,
    but off the distribution the transformer saw at sigma < 1) or the teacher's own one-step estimate
    noise - v_teacher(noise, sigma=1).
    """
    if clean is None:
        return noise
    s = sigma.to(device=noise.device, dtype=noise.dtype).view(-1, *([1] * (noise.dim() - 1)))
    return (1 - s) * clean + s * noise


def perturb_hidden_states(hidden_states: torch.Tensor, mask: torch.Tensor, scale: float,
                          generator: torch.Generator) -> torch.Tensor:
    """Add isotropic Gaussian noise of `scale` x each layer's RMS to the real tokens' encoder states.

    Why: English prompts fill only a few directions of the encoder's hidden space, so an AlignNet trained
    on them leaves its weights on every other direction at their random init, and a German or image prompt,
    which differs from English partly in those directions, gets amplified. Noise in all directions is a
    penalty on the AlignNet's sensitivity to them (for small noise, the same as an L2 penalty on its input
    Jacobian), whatever the optimizer does.
    """
    if scale <= 0:
        return hidden_states
    real = mask.to(hidden_states.dtype)[:, None, :, None]  # (B, 1, S, 1)
    count = (real.sum(dim=(0, 2, 3)) * hidden_states.shape[-1]).clamp_min(1.0)
    rms = ((hidden_states.float().pow(2) * real).sum(dim=(0, 2, 3)) / count).sqrt()  # per layer
    noise = torch.randn(hidden_states.shape, generator=generator, dtype=torch.float32).to(hidden_states.device)
    return hidden_states + (scale * noise * rms[None, :, None, None] * real).to(hidden_states.dtype)

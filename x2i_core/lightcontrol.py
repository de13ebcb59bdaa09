"""LightControl (the X2I paper's stage 2): a ControlNeXt-style branch that reads the SOURCE image of an edit and adds
one residual to the image stream after each double block of a frozen FLUX transformer.

Per double block one small conv module: stem conv -> ResNet block (h0 -> h0) -> ResNet block (h0 -> h1) -> stride-2
conv to the transformer's inner width (method.md: 128 -> 128 -> 256 -> 3072 at FLUX.1 sizes, ~6.6 M parameters
each). The branch reads the source image's VAE latents, scaled and shifted as the transformer's latents are and NOT
packed: (B, C, 2R, 2C'). Why latents and not pixels: the same VAE grid the transformer denoises, so the stride-2
conv lands exactly on the packed token grid (one token per 2x2 latent patch) at any size, and the input is 8x smaller
than pixels per side. Its output per block is (B, R*C', inner), the image-token sequence's shape, in the order
FluxPipeline packs tokens (row-major). The last conv of every module starts at zero, so a new branch is a no-op.

The residual does not depend on the timestep (as in ControlNeXt): it is computed once per generation.
"""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .errors import IncompatibleError


def _groups(channels: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a 1x1 shortcut when the width changes."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class _BlockBranch(nn.Module):
    """The conv module of one double block: latents (B, C, 2R, 2C') -> (B, inner, R, C')."""

    def __init__(self, latent_channels: int, hidden: tuple[int, int], inner: int):
        super().__init__()
        self.stem = nn.Conv2d(latent_channels, hidden[0], 3, padding=1)
        self.res1, self.res2 = _ResBlock(hidden[0], hidden[0]), _ResBlock(hidden[0], hidden[1])
        self.out = nn.Conv2d(hidden[1], inner, 3, stride=2, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, latents):
        h = self.res2(self.res1(self.stem(latents)))
        return self.out(nn.functional.silu(h))


class LightControlNet(ModelMixin, ConfigMixin):
    """One conv module per double block; `forward(source_latents)` -> a list of residuals (B, R*C', inner)."""

    @register_to_config
    def __init__(self, latent_channels: int = 16, inner_dim: int = 3072, num_double_blocks: int = 19,
                 hidden_channels: tuple = (128, 256)):
        super().__init__()
        hidden = (int(hidden_channels[0]), int(hidden_channels[1]))
        self.blocks = nn.ModuleList(_BlockBranch(latent_channels, hidden, inner_dim) for _ in range(num_double_blocks))

    @classmethod
    def for_transformer(cls, transformer_config, latent_channels: int, hidden_channels=(128, 256)) -> "LightControlNet":
        """A new (no-op) branch sized from a FluxTransformer2DModel's config and its VAE's latent channels."""
        return cls(latent_channels=int(latent_channels), num_double_blocks=int(transformer_config["num_layers"]),
                   inner_dim=int(transformer_config["num_attention_heads"]) * int(transformer_config["attention_head_dim"]),
                   hidden_channels=tuple(hidden_channels))

    def check_fits(self, transformer_config, latent_channels: int, source: str = "the LightControl branch") -> None:
        """IncompatibleError unless this branch was made for this transformer's widths, depth and latents."""
        inner = int(transformer_config["num_attention_heads"]) * int(transformer_config["attention_head_dim"])
        wanted = {"inner_dim": inner, "num_double_blocks": int(transformer_config["num_layers"]),
                  "latent_channels": int(latent_channels)}
        for key, value in wanted.items():
            if int(self.config[key]) != value:
                raise IncompatibleError(f"{source} was made for another architecture: {key} {self.config[key]} vs "
                                        f"the transformer's {value}")

    def forward(self, source_latents: torch.Tensor, scale: float = 1.0) -> list[torch.Tensor]:
        """Residuals for the double blocks, each (B, R*C', inner_dim) in the packed token order."""
        out = []
        for block in self.blocks:
            h = block(source_latents)
            out.append(scale * h.flatten(2).transpose(1, 2))
        return out


def encode_lightcontrol_source(vae, pixels: torch.Tensor, *, sample_generator=None) -> torch.Tensor:
    """VAE latents (B, C, 2R, 2C') of images in [-1, 1], scaled and shifted as the Flux transformer's latents are
    (the posterior's mode unless a generator asks for a sample)."""
    dist = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
    latents = dist.mode() if sample_generator is None else dist.sample(generator=sample_generator)
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor

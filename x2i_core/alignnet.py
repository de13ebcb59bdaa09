"""AlignNet: fuse every encoder layer, then project to the backbone's prompt and pooled embeddings.

As in the X2I paper: Conv2d(C -> 1, k=5) over the (S x H) plane ("conv"), or a learnable per-layer
scale and a mean ("scale", the InternVL-1B variant); "last" (last layer only) exists for the paper's
ablation; `skip_layers` leaves the first hidden states (the token embeddings) out of the fusion;
`token_kernel` sets the conv kernel's extent along the sequence (1: no mixing of neighbouring tokens);
`context_layers` adds bidirectional self-attention layers after the fusion (not in the paper, see below).
Then LayerNorm(H) -> Linear(H->D) -> GELU -> Linear(D->D) = prompt_embeds, and GELU -> Linear(D->P)
averaged over real tokens = pooled_prompt_embeds.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .errors import CheckpointError, first_line
from .interfaces import Aligner, Conditioning

FUSIONS = ("conv", "scale", "last")


class AlignNet(ModelMixin, ConfigMixin, Aligner):
    """The X2I AlignNet. save_pretrained/from_pretrained write config.json + safetensors."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        prompt_dim: int = 4096,
        pooled_dim: int = 768,
        fusion: str = "conv",
        kernel_size: int = 5,
        masked_pool: bool = True,
        skip_layers: int = 0,
        token_kernel: int | None = None,
        context_layers: int = 0,
        encoder: str | None = None,
        backbone: str | None = None,
        # the encoder template it was trained on: None = the encoder's default (x2i's own, what `x2i align`
        # trains with); "reference" for the reference's released AlignNets (`x2i convert` records it)
        prompt_template: str | None = None,
        # what `x2i align` records so that `--aligner DIR` alone finds its models (None in older folders):
        # the hub id or absolute folder each model was loaded from, and the square training resolution
        encoder_checkpoint: str | None = None,
        backbone_checkpoint: str | None = None,
        resolution: int | None = None,
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if not 0 <= skip_layers < num_layers:
            raise ValueError(f"skip_layers must be in [0, {num_layers}), got {skip_layers}")
        token_kernel = kernel_size if token_kernel is None else token_kernel  # None: the paper's square kernel
        if token_kernel < 1 or token_kernel % 2 == 0:
            raise ValueError(f"token_kernel must be a positive odd number, got {token_kernel}")
        fused = num_layers - skip_layers  # hidden state 0 is the token embedding output: skip_layers=1 leaves it out
        if fusion == "conv":
            self.layer_fusion = nn.Conv2d(fused, 1, (token_kernel, kernel_size),
                                          padding=(token_kernel // 2, kernel_size // 2))
        elif fusion == "scale":
            self.layer_scale = nn.Parameter(torch.ones(1, fused, 1, 1))
        if context_layers < 0:
            raise ValueError(f"context_layers must be >= 0, got {context_layers}")
        # Why: the MLLM is causal, so "red" in "a red circle" cannot see the noun after it, while T5, whose
        # embeddings the AlignNet imitates, is bidirectional. The 5x5 conv gives each token its neighbours at
        # fixed offsets, which breaks when another language splits or orders words differently; attention
        # finds the related token by content instead.
        heads = _heads(hidden_size)
        self.context = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden_size, heads, hidden_size * 2, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(context_layers)
        )
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.project_in = nn.Linear(hidden_size, prompt_dim, bias=False)
        self.project_out = nn.Linear(prompt_dim, prompt_dim, bias=False)
        self.pooled_proj = nn.Linear(prompt_dim, pooled_dim)

    @classmethod
    def from_pretrained(cls, pretrained, **kwargs) -> "AlignNet":
        """Load a save_pretrained folder (or hub id); any failure is one CheckpointError line."""
        path = Path(str(pretrained)).expanduser()
        is_local = path.exists() or str(pretrained).startswith((".", "/", "~")) or str(pretrained).count("/") != 1
        if is_local:
            _check_alignnet_folder(path)
        try:
            return super().from_pretrained(str(path) if is_local else pretrained, **kwargs)
        except CheckpointError:
            raise
        except Exception as exc:  # diffusers raises OSError/ValueError/EnvironmentError/safetensors errors
            # the reference's hub repository (OPPOer/X2I) holds .pt pickles, not save_pretrained folders
            hint = "" if is_local else " (a reference X2I .pt file? download it and run `x2i convert`)"
            raise CheckpointError(f"cannot load an AlignNet from {pretrained}: {first_line(exc)}{hint}") from exc

    def fuse_layers(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, C, S, H) -> (B, S, H)."""
        fusion = self.config.fusion
        hidden_states = hidden_states[:, self.config.skip_layers:]
        if fusion == "conv":
            return self.layer_fusion(hidden_states).squeeze(1)
        if fusion == "scale":
            return (hidden_states * self.layer_scale).mean(dim=1)
        return hidden_states[:, -1]

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Conditioning:
        """(B, C, S, H) hidden states and (B, S) mask (None: no padding) -> prompt and pooled embeddings."""
        b, c, s, h = hidden_states.shape
        if (c, h) != (self.config.num_layers, self.config.hidden_size):
            raise ValueError(
                f"AlignNet expects hidden states (B, {self.config.num_layers}, S, {self.config.hidden_size}), "
                f"got {tuple(hidden_states.shape)}"
            )
        param = self.project_in.weight
        hidden_states = hidden_states.to(param.dtype)
        if attention_mask is None:
            attention_mask = torch.ones(b, s, dtype=torch.bool, device=hidden_states.device)
        mask = attention_mask.to(device=hidden_states.device, dtype=torch.bool)
        # Zero padded positions so the 5x5 convolution sees the same zeros at a sequence end whether
        # the batch was padded or not: outputs on real tokens do not depend on padding.
        hidden_states = hidden_states * mask[:, None, :, None].to(hidden_states.dtype)
        fused = self.fuse_layers(hidden_states)
        for layer in self.context:
            # real tokens never attend to padding; padded rows are zeroed so they stay batch-independent
            fused = layer(fused, src_key_padding_mask=~mask) * mask[..., None].to(fused.dtype)
        prompt_embeds = self.project_out(nn.functional.gelu(self.project_in(self.norm(fused))))
        per_token = self.pooled_proj(nn.functional.gelu(prompt_embeds))
        if self.config.masked_pool:
            weights = mask.to(per_token.dtype).unsqueeze(-1)
            pooled = (per_token * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        else:  # the reference's mean, padding included (kept for its released weights)
            pooled = per_token.mean(1)
        return Conditioning(prompt_embeds, pooled, mask)

    # -- the Aligner's declared shape (what check_fits compares) ----------------------------------
    @property
    def in_layers(self) -> int:
        """C: stacked hidden states read (config.num_layers)."""
        return int(self.config.num_layers)

    @property
    def in_width(self) -> int:
        """H: width of each hidden state (config.hidden_size)."""
        return int(self.config.hidden_size)

    @property
    def out_prompt_dim(self) -> int:
        """D: prompt_embeds width (config.prompt_dim)."""
        return int(self.config.prompt_dim)

    @property
    def out_pooled_dim(self) -> int:
        """P: pooled width (config.pooled_dim)."""
        return int(self.config.pooled_dim)

    @property
    def masked_pool(self) -> bool:
        """False for the reference's released weights, which average padding too."""
        return bool(self.config.masked_pool)

    @property
    def made_for(self) -> dict[str, str]:
        """The encoder and backbone names recorded in config.json (when it records them)."""
        return {k: self.config[k] for k in ("encoder", "backbone") if k in self.config and self.config[k]}

    @property
    def prompt_template(self) -> str | None:
        """The encoder template recorded in config.json ("reference" for converted reference AlignNets), or None."""
        return self.config.get("prompt_template")

    def num_parameters(self) -> int:  # type: ignore[override]
        """All parameters, trainable or not."""
        return sum(p.numel() for p in self.parameters())


def _check_alignnet_folder(path: Path) -> None:
    """Explain the usual mistakes before diffusers gives a long traceback."""
    if not path.exists():
        raise CheckpointError(f"AlignNet folder not found: {path}")
    if path.is_file():
        hint = " (a reference X2I checkpoint? convert it with `x2i convert`)" if path.suffix in (".pt", ".bin", ".pth") else ""
        raise CheckpointError(f"{path} is a file; an AlignNet is a folder with config.json and safetensors{hint}")
    config = path / "config.json"
    if not config.is_file():
        ref = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        hint = f" (found {ref[0]}: convert it with `x2i convert {path / ref[0]} -o DIR`)" if ref else ""
        raise CheckpointError(f"{path} has no config.json, so it is not an AlignNet folder{hint}")
    try:
        cfg = json.loads(config.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{config} is not valid JSON: {exc}") from exc
    if cfg.get("_class_name") != "AlignNet":
        raise CheckpointError(f"{path} holds a {cfg.get('_class_name') or 'non-diffusers'} config, not an AlignNet")


def _heads(hidden_size: int) -> int:
    """Attention heads of a context layer: heads of width 64 where the width allows, else fewer."""
    heads = max(1, hidden_size // 64)
    while hidden_size % heads:
        heads -= 1
    return heads

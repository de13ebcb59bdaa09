"""The values passed between components: an encoded prompt, a backbone's conditioning, a hook point."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class EncodedPrompt:
    """What an encoder returns: every layer's hidden states, stacked, and the padding mask."""

    hidden_states: torch.Tensor  # (B, C, S, H)
    attention_mask: torch.Tensor  # (B, S) bool, True on real tokens


@dataclass
class Conditioning:
    """What the backbone consumes: FLUX's prompt_embeds (T5 slot) and pooled_prompt_embeds (CLIP slot)."""

    prompt_embeds: torch.Tensor  # (B, S, D)
    pooled_prompt_embeds: torch.Tensor  # (B, P)
    attention_mask: torch.Tensor | None = None  # (B, S) bool; None = no padding

    def repeat(self, n: int) -> "Conditioning":
        """Each prompt n times, consecutively (several images per prompt)."""
        mask = None if self.attention_mask is None else self.attention_mask.repeat_interleave(n, 0)
        return Conditioning(
            self.prompt_embeds.repeat_interleave(n, 0),
            self.pooled_prompt_embeds.repeat_interleave(n, 0),
            mask,
        )


@dataclass
class AttentionPoint:
    """An attention module whose output alignment distils.

    kind "double": the module returns (image_out, text_out).
    kind "single": the module returns one tensor, text tokens first, then image tokens.
    """

    name: str
    module: nn.Module
    kind: str

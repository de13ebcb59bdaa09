"""Aligner: maps an encoder's stacked hidden states to a backbone's conditioning."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..errors import IncompatibleError
from .values import Conditioning


class Aligner(ABC):
    """Maps an encoder's stacked hidden states to a backbone's conditioning.

    Implementations are torch modules too (a mixin, so diffusers' ModelMixin keeps its attribute lookup).
    The four shape properties are what `check_fits` compares; `made_for` names what it was trained with.
    """

    @abstractmethod
    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> Conditioning:
        """(B, C, S, H) hidden states and (B, S) mask -> Conditioning."""

    @property
    @abstractmethod
    def in_layers(self) -> int:
        """C: how many stacked hidden states the aligner reads."""

    @property
    @abstractmethod
    def in_width(self) -> int:
        """H: the width of each hidden state it reads."""

    @property
    @abstractmethod
    def out_prompt_dim(self) -> int:
        """D: the width of the prompt_embeds it writes."""

    @property
    @abstractmethod
    def out_pooled_dim(self) -> int:
        """P: the width of the pooled embedding it writes."""

    @property
    def masked_pool(self) -> bool:
        """True when the pooled embedding averages real tokens only (so it does not depend on padding)."""
        return True

    @property
    def made_for(self) -> dict[str, str]:
        """What it was trained with, e.g. {"encoder": "qwen2.5-vl-7b", "backbone": "flux-dev"} (may be empty)."""
        return {}

    @property
    def prompt_template(self) -> str | None:
        """The encoder template it was trained on ("reference" for the reference's released AlignNets), or None
        for the encoder's default (what `x2i align` trains with). Generation passes it to the encoder."""
        return None

    def check_fits(self, encoder=None, backbone=None) -> None:
        """Raise IncompatibleError when the encoder or backbone has other shapes than this aligner."""
        made_for = self.made_for
        if encoder is not None and (self.in_layers, self.in_width) != (encoder.num_layers, encoder.hidden_size):
            note = f" (made for {made_for['encoder']})" if made_for.get("encoder") else ""
            raise IncompatibleError(
                f"this AlignNet expects {self.in_layers} layers of width {self.in_width}{note}, "
                f"but the encoder {encoder.identity} gives {encoder.num_layers} x {encoder.hidden_size}"
            )
        fits = (self.out_prompt_dim, self.out_pooled_dim)
        if backbone is not None and fits != (backbone.prompt_embed_dim, backbone.pooled_embed_dim):
            note = f" (made for {made_for['backbone']})" if made_for.get("backbone") else ""
            raise IncompatibleError(
                f"this AlignNet outputs prompt/pooled widths {self.out_prompt_dim}/{self.out_pooled_dim}{note}, "
                f"but the backbone {backbone.identity} takes {backbone.prompt_embed_dim}/{backbone.pooled_embed_dim}"
            )

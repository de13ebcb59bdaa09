"""The four interfaces every plugin implements: MultimodalEncoder, DiTBackbone, Aligner, Adapter.

Shapes, in the names used throughout x2i:
  B batch, C encoder layers + 1 (embedding output first, after-final-norm last), S tokens,
  H encoder width, D backbone prompt width (4096 for FLUX's T5 slot), P pooled width (768, CLIP slot).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from .errors import IncompatibleError, InputError
from .prompt import MultimodalPrompt


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


class MultimodalEncoder(ABC):
    """A multimodal LLM that turns a MultimodalPrompt into the hidden states of all its layers."""

    #: the modalities this encoder understands, a subset of ("text", "image", "video", "audio")
    modalities: ClassVar[frozenset[str]] = frozenset({"text"})

    @classmethod
    @abstractmethod
    def from_pretrained(cls, pretrained: str, *, device=None, dtype=None, **options) -> "MultimodalEncoder":
        """Load from a hub id or a local folder."""

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """C: decoder layers + 1 (the embedding output)."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """H: the width of each hidden state."""

    @property
    def identity(self) -> str:
        """A short name saved with an AlignNet so that a mismatch can be named in an error."""
        return f"{type(self).__name__}(layers={self.num_layers}, hidden={self.hidden_size})"

    @abstractmethod
    def encode(self, prompts: Sequence[MultimodalPrompt]) -> EncodedPrompt:
        """Apply the encoder's one prompt template and return all hidden states, padded with a mask.

        Alignment (text only) and generation (any mix) go through this same method.
        """

    def check_prompt(self, prompt: MultimodalPrompt) -> None:
        """Raise InputError if the prompt uses a modality this encoder does not understand.

        An empty prompt is valid here: it is the unconditional prompt of classifier-free guidance (and of
        alignment with --empty-prompt-prob). Generation refuses an empty *user* prompt itself."""
        unsupported = prompt.modalities - set(self.modalities)
        if unsupported:
            raise InputError(
                f"{self.identity} does not understand {', '.join(sorted(unsupported))} input "
                f"(it takes {', '.join(sorted(self.modalities))})"
            )

    def to(self, device=None, dtype=None) -> "MultimodalEncoder":
        """Move the encoder's weights (a no-op unless the plugin overrides it); returns self."""
        return self


class TeacherConditioner(ABC):
    """The backbone's own text encoders (FLUX: T5-XXL + CLIP-L), loaded only for alignment."""

    @abstractmethod
    def encode_text(self, texts: Sequence[str]) -> Conditioning:
        """Encode English captions the way the original pipeline does."""


class DiTBackbone(ABC):
    """A frozen diffusion transformer with its VAE, scheduler and sampler."""

    default_steps: int = 28
    default_guidance: float = 3.5
    default_size: int = 1024
    # Classifier-free guidance against a negative prompt; 1 = off. A backbone that supports it accepts
    # `negative=Conditioning, true_cfg_scale=float` in generate().
    default_true_cfg: float = 1.0

    @classmethod
    @abstractmethod
    def from_pretrained(cls, pretrained: str, *, device=None, dtype=None, offload: bool = False, **options) -> "DiTBackbone":
        """Load transformer, VAE and scheduler from a hub id or folder, never the teacher text encoders."""

    @property
    @abstractmethod
    def transformer(self) -> nn.Module:
        """The frozen transformer (teacher and student share it during alignment)."""

    @property
    @abstractmethod
    def prompt_embed_dim(self) -> int:
        """D: width of prompt_embeds."""

    @property
    @abstractmethod
    def pooled_embed_dim(self) -> int:
        """P: width of pooled_prompt_embeds."""

    @property
    def identity(self) -> str:
        """A short name saved with an AlignNet so that a mismatch can be named in an error."""
        return f"{type(self).__name__}(prompt={self.prompt_embed_dim}, pooled={self.pooled_embed_dim})"

    @abstractmethod
    def generate(
        self,
        conditioning: Conditioning,
        *,
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        on_step: Callable[[int, int], None] | None = None,
        **pipeline_kwargs: Any,
    ) -> list:
        """Sample one image per conditioning row; returns PIL images. `on_step(i, total)` reports progress."""

    @abstractmethod
    def load_teacher(self) -> TeacherConditioner:
        """Load the backbone's own text conditioning (for alignment only)."""

    @abstractmethod
    def attention_points(self) -> list[AttentionPoint]:
        """The attention modules alignment hooks, in forward order."""

    @abstractmethod
    def noise_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pure-noise latents in the layout `predict` takes."""

    @abstractmethod
    def predict(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        conditioning: Conditioning,
        *,
        height: int,
        width: int,
        guidance_scale: float,
    ) -> torch.Tensor:
        """One transformer call (timestep in [0, 1], 1 = pure noise): the model's flow prediction."""


class Aligner(ABC):
    """Maps an encoder's stacked hidden states to a backbone's conditioning.

    Implementations are torch modules too (a mixin, so diffusers' ModelMixin keeps its attribute lookup).
    """

    @abstractmethod
    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> Conditioning:
        """(B, C, S, H) hidden states and (B, S) mask -> Conditioning."""

    def check_fits(self, encoder: MultimodalEncoder | None = None, backbone: DiTBackbone | None = None) -> None:
        """Raise IncompatibleError when the encoder or backbone has other shapes than this aligner."""
        cfg = self.config
        if encoder is not None and (cfg.num_layers, cfg.hidden_size) != (encoder.num_layers, encoder.hidden_size):
            made_for = f" (made for {cfg.encoder})" if getattr(cfg, "encoder", None) else ""
            raise IncompatibleError(
                f"this AlignNet expects {cfg.num_layers} layers of width {cfg.hidden_size}{made_for}, "
                f"but the encoder {encoder.identity} gives {encoder.num_layers} x {encoder.hidden_size}"
            )
        if backbone is not None and (cfg.prompt_dim, cfg.pooled_dim) != (backbone.prompt_embed_dim, backbone.pooled_embed_dim):
            made_for = f" (made for {cfg.backbone})" if getattr(cfg, "backbone", None) else ""
            raise IncompatibleError(
                f"this AlignNet outputs prompt/pooled widths {cfg.prompt_dim}/{cfg.pooled_dim}{made_for}, "
                f"but the backbone {backbone.identity} takes {backbone.prompt_embed_dim}/{backbone.pooled_embed_dim}"
            )


class Adapter(ABC):
    """Changes a backbone (a LoRA, a ControlNet, an IP-Adapter ...)."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, pretrained: str, **options) -> "Adapter":
        """Load the adapter's weights from a hub id, folder or file."""

    @abstractmethod
    def apply(self, backbone: DiTBackbone) -> None:
        """Attach to the backbone (in place)."""

    def pipeline_kwargs(self, prompt: MultimodalPrompt) -> dict[str, Any]:
        """Extra keyword arguments for `DiTBackbone.generate` (for example a control image)."""
        return {}

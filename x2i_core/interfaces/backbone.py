"""DiTBackbone: a frozen diffusion transformer with its VAE, scheduler and sampler; TeacherConditioner: its
own text encoders, loaded for alignment only."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..errors import IncompatibleError, InputError
from .values import AttentionPoint, Conditioning


class TeacherConditioner(ABC):
    """The backbone's own text encoders (FLUX: T5-XXL + CLIP-L), loaded only for alignment."""

    @abstractmethod
    def encode_text(self, texts: Sequence[str]) -> Conditioning:
        """Encode English captions the way the original pipeline does."""


class DiTBackbone(ABC):
    """A frozen diffusion transformer with its VAE, scheduler and sampler.

    Required: loading, the transformer and its embedding widths, `denoise` and `decode`. Optional
    capabilities are declared by flags: `supports_true_cfg` (generate takes `negative` and
    `true_cfg_scale`) and `supports_alignment` (attention_points, load_teacher, noise_latents, predict).
    """

    default_steps: int = 28
    default_guidance: float = 3.5
    default_size: int = 1024
    #: classifier-free guidance against a negative prompt by default; 1 = off
    default_true_cfg: float = 1.0
    #: height and width must be multiples of this
    size_multiple: int = 16
    #: things the user should be told once the backbone is loaded (the CLI prints each as a note)
    notes: Sequence[str] = ()
    #: generate/denoise accept `negative=Conditioning, true_cfg_scale=float` (two transformer calls per step)
    supports_true_cfg: ClassVar[bool] = False
    #: attention_points, load_teacher, noise_latents and predict work, so `x2i align` can train an AlignNet
    supports_alignment: ClassVar[bool] = False
    #: denoise/generate accept `request=GenerationRequest` (init image, strength, mask, outpaint) and
    #: `guides=[Guide, ...]` (adapters' per-step inputs, x2i_core.interfaces.adapter), all in one sampling loop
    supports_guides: ClassVar[bool] = False

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

    def check_size(self, height: int, width: int) -> None:
        """InputError unless height and width are positive multiples of `size_multiple`."""
        m = int(self.size_multiple)
        if height <= 0 or width <= 0 or height % m or width % m:
            near_h, near_w = max(m, round(height / m) * m), max(m, round(width / m) * m)
            raise InputError(
                f"width and height must be positive multiples of {m} for this backbone, "
                f"got {width}x{height} (try {near_w}x{near_h})"
            )

    # -- sampling -------------------------------------------------------------------------------
    @abstractmethod
    def denoise(
        self,
        conditioning: Conditioning,
        *,
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        on_step: Callable[[int, int], None] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The sampling loop: final latents, one row per conditioning row. `on_step(i, total)` after each step;
        `latents` (as noise_latents makes them) replace the seeded noise."""

    @abstractmethod
    def decode(self, latents: torch.Tensor, height: int, width: int) -> list:
        """Final latents -> PIL images."""

    def generate(self, conditioning: Conditioning, *, height: int, width: int, num_inference_steps: int,
                 guidance_scale: float, **kwargs: Any) -> list:
        """Sample one PIL image per conditioning row: `decode(denoise(...))`."""
        latents = self.denoise(conditioning, height=height, width=width, num_inference_steps=num_inference_steps,
                               guidance_scale=guidance_scale, **kwargs)
        return self.decode(latents, height, width)

    # -- alignment (optional: supports_alignment) -------------------------------------------------
    def _no_alignment(self, what: str):
        return IncompatibleError(f"the backbone {self.identity} cannot be aligned ({what} is not implemented)")

    def load_teacher(self) -> TeacherConditioner:
        """Load the backbone's own text conditioning (for alignment only)."""
        raise self._no_alignment("load_teacher")

    def attention_points(self) -> list[AttentionPoint]:
        """The attention modules alignment hooks, in forward order."""
        raise self._no_alignment("attention_points")

    def noise_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pure-noise latents in the layout `predict` and `denoise` take."""
        raise self._no_alignment("noise_latents")

    def predict(self, latents: torch.Tensor, timestep: torch.Tensor, conditioning: Conditioning, *, height: int,
                width: int, guidance_scale: float) -> torch.Tensor:
        """One transformer call (timestep in [0, 1], 1 = pure noise): the model's flow prediction."""
        raise self._no_alignment("predict")

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> clean latents in the layout `predict` takes (for training on images:
        train-lora's flow-matching target); the inverse of `decode` before the pixels."""
        raise IncompatibleError(f"the backbone {self.identity} cannot encode images for training (encode is not "
                                f"implemented)")

"""Adapters and guides: the two ways a plugin extends generation without touching the core.

1. Weight adapters change the transformer once (LoRA): `Adapter.apply(backbone)` when the pipeline is built,
   `Adapter.remove(backbone)` to undo it.
2. Per-step guides add inputs or residuals at every step (ControlNet residuals, IP-Adapter image embeddings,
   Kontext image tokens, inpaint blending ...): `Adapter.guide(request)` returns a `Guide` for one generation
   (or None when the request gives it nothing to do). One adapter may do both (an IP-Adapter loads attention
   processors with `apply`, then feeds image embeddings with its guide).

How a guide plugs into a backbone's one sampling loop (the Flux family: x2i_plugins.backbones.flux.sampling):

    state = guide.prepare(backbone, request, info)         # once, after the noise is drawn (info: LatentsInfo)
    for each step i, timestep t:
        for each branch ("positive", then "negative" with true CFG):
            extra = guide.step_inputs(state, step)        # step: StepInputs of this branch
            ... the transformer call gets the guides' extras merged (see STEP_KEYS) ...
        latents = Euler step (true CFG mixes the branches first)
        latents = guide.after_step(state, step_with_new_latents)

STEP_KEYS are what `step_inputs` may return (the Flux engine refuses other keys in one line):
  "controlnet_block_samples", "controlnet_single_block_samples": lists of residuals (summed over guides),
  "controlnet_blocks_repeat": bool (XLabs-style ControlNets),
  "joint_attention_kwargs": dict merged into the transformer's (e.g. {"ip_adapter_image_embeds": [...]}),
  "image_tokens", "image_ids": packed tokens (B, N, C) and their position ids (N, 3) appended after the
      latents (Kontext); the prediction for them is dropped,
  "channels": (B, L, C') concatenated to the latents along the channel axis (FLUX Fill's masked image + mask).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

STEP_KEYS = frozenset({"controlnet_block_samples", "controlnet_single_block_samples", "controlnet_blocks_repeat",
                       "joint_attention_kwargs", "image_tokens", "image_ids", "channels"})


@dataclass
class LatentsInfo:
    """What a guide learns once per generation: the latent layout and the schedule actually run."""

    batch: int
    height: int  # pixels
    width: int
    rows: int  # packed latent grid: the image sequence is rows * cols tokens
    cols: int
    device: Any  # torch.device
    dtype: Any  # torch.dtype of the transformer
    timesteps: Any  # 1-D tensor of the timesteps run (0..1000), after any img2img cut
    generators: list | None = None  # one torch.Generator per image


@dataclass
class StepInputs:
    """One transformer call of the loop, as a guide sees it (tensors on the execution device)."""

    index: int  # step number from 0 within the steps run
    timestep: Any  # (B,) what the transformer gets (t / 1000, the sigma)
    latents: Any  # packed (B, rows*cols, C)
    branch: str  # "positive" or "negative" (true CFG's second call)
    prompt_embeds: Any  # (B, S, D) of this branch
    pooled_prompt_embeds: Any  # (B, P)
    txt_ids: Any  # (S, 3)
    img_ids: Any  # (rows*cols, 3)
    guidance: Any  # (B,) or None
    joint_attention_kwargs: dict  # what the call gets so far (the text padding mask, ...), read-only
    sigma_next: Any = None  # in after_step: the sigma the latents are now at (0 after the last step)


class Guide:
    """Per-step inputs for one generation; every method has a no-op default, override what you need."""

    def prepare(self, backbone, request, info: LatentsInfo) -> Any:
        """Once before the loop: encode control or reference images etc.; returns the state passed back below."""
        return None

    def step_inputs(self, state: Any, step: StepInputs) -> dict[str, Any]:
        """Extra transformer inputs for this call (keys from STEP_KEYS)."""
        return {}

    def after_step(self, state: Any, step: StepInputs) -> Any:
        """The latents after the Euler step (step.latents), possibly changed (inpaint blending); return them."""
        return step.latents


class Adapter(ABC):
    """A loaded adapter plugin: a weight change (apply/remove), a per-step guide (guide), or both.

    `name` and `scale` are recorded in each PNG's metadata (via `describe`).
    """

    name: str = "adapter"
    scale: float = 1.0
    source: str = ""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, pretrained: str, **options) -> "Adapter":
        """Load the adapter's weights from a hub id, folder or file (CheckpointError/IncompatibleError: one line)."""

    def apply(self, backbone) -> None:
        """Change the backbone in place (weight adapters); called once when the pipeline is built."""

    def remove(self, backbone) -> None:
        """Undo `apply`."""

    def check_request(self, request) -> None:
        """InputError when the request lacks what this adapter needs (called before encoding)."""

    def guide(self, request) -> Guide | None:
        """The per-step guide for this request, or None."""
        return None

    def describe(self) -> str:
        """`name:source@scale`, as PNG metadata records it."""
        where = f":{self.source}" if self.source else ""
        return f"{self.name}{where}@{self.scale:g}"

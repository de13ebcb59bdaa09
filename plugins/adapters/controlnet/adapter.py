"""ControlNetAdapter: a FluxControlNetModel as a per-step guide on the Flux backbone's one loop.

Each step, for each branch (true CFG's negative too), the ControlNet runs on the current latents with the same
conditioning the transformer gets, i.e. our AlignNet's embeddings (FluxControlNetModel takes encoder_hidden_states
and pooled_projections, so it never needs T5 or CLIP), and its block residuals are added to the transformer's.

Facts from diffusers 0.42 (controlnet_flux.py, transformer_flux.py, pipeline_flux_controlnet.py):
- the control image enters as packed VAE latents (scaled and shifted like the image latents); ControlNets with an
  `input_hint_block` (XLabs) take the pixels instead and their double-block residuals repeat (`blocks_repeat`);
- a Union ControlNet (`num_mode` set) needs a mode index and prepends one mode token to the text sequence;
- the transformer adds residual `k // ceil(n / len)` to block k. Here every ControlNet's residuals are spread to
  one entry per transformer block first (the same tensors, referenced again), so that several ControlNets of
  different depths sum correctly when the engine adds their lists.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers import FluxControlNetModel, FluxMultiControlNetModel

from x2i_core import Adapter, CheckpointError, Guide, IncompatibleError, InputError, first_line, open_image

#: transformer config keys a ControlNet must share with the backbone's transformer
_SHARED = ("joint_attention_dim", "pooled_projection_dim", "attention_head_dim", "num_attention_heads", "axes_dims_rope")


def read_config(pretrained: str) -> dict:
    """The ControlNet's config.json (a folder or hub id), without its weights; CheckpointError/IncompatibleError."""
    try:
        config = FluxControlNetModel.load_config(pretrained)
    except Exception as exc:
        where = "folder" if Path(pretrained).expanduser().exists() else "checkpoint"
        raise CheckpointError(f"cannot read the ControlNet {where} {pretrained}: {type(exc).__name__}: "
                              f"{first_line(exc)}") from exc
    kind = config.get("_class_name")
    if kind != "FluxControlNetModel":
        raise IncompatibleError(f"the ControlNet {pretrained} is a {kind or 'model of unknown class'}, made for another "
                                f"architecture: x2i's FLUX backbones take FluxControlNetModel checkpoints")
    return config


def check_fits(config: dict, transformer_config, latent_width: int, source: str) -> None:
    """IncompatibleError unless the ControlNet was made for this transformer's widths and latent layout."""
    wrong = [f"{key} {config.get(key)} vs {transformer_config.get(key)}" for key in _SHARED
             if key in config and list(_tuple(config[key])) != list(_tuple(transformer_config.get(key)))]
    if int(config.get("in_channels", latent_width)) != latent_width:
        wrong.append(f"in_channels {config.get('in_channels')} vs the latents' {latent_width}")
    if wrong:
        raise IncompatibleError(f"the ControlNet {source} was made for another architecture: {wrong[0]}")


def _tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def spread(samples, blocks: int, repeat: bool = False) -> list | None:
    """One residual per transformer block, chosen as the transformer would choose it (references, no copies)."""
    if samples is None:
        return None
    count = len(samples)
    if repeat:
        return [samples[i % count] for i in range(blocks)]
    interval = int(math.ceil(blocks / count))
    return [samples[i // interval] for i in range(blocks)]


class ControlGuide(Guide):
    """Runs one ControlNet (with one or several control images) at every transformer call."""

    def __init__(self, adapter: "ControlNetAdapter", controls: list[tuple]):
        self.adapter, self.controls = adapter, controls  # (image, mode, scale) each

    def prepare(self, backbone, request, info):
        net = self.adapter.model
        conds = [_control_input(backbone, net, image, info) for image, _, _ in self.controls]
        conds = [cond.expand(info.batch, *cond.shape[1:]) for cond in conds]
        modes = [torch.full((info.batch,), -1 if mode is None else int(mode), device=info.device, dtype=torch.long)
                 for _, mode, _ in self.controls]
        # a ControlNet trained on FLUX.1-dev has a guidance embedder even on a backbone without one (schnell)
        guidance = None
        if net.config.guidance_embeds:
            value = request.guidance if request is not None and request.guidance is not None else 3.5
            guidance = torch.full((info.batch,), float(value), device=info.device, dtype=torch.float32)
        return {"multi": FluxMultiControlNetModel([net]), "conds": conds, "modes": modes, "guidance": guidance,
                "scales": [float(s) for _, _, s in self.controls],
                "blocks": (len(backbone.transformer.transformer_blocks),
                           len(backbone.transformer.single_transformer_blocks))}

    def step_inputs(self, state, step):
        net = self.adapter.model
        attention = dict(step.joint_attention_kwargs)
        if net.union and "attention_mask" in attention:  # the mode token is one more (real) text key
            mask = attention["attention_mask"]
            attention["attention_mask"] = torch.cat([torch.ones_like(mask[..., :1]), mask], dim=-1)
        double, single = state["multi"](
            hidden_states=step.latents, controlnet_cond=state["conds"], controlnet_mode=state["modes"],
            conditioning_scale=state["scales"], encoder_hidden_states=step.prompt_embeds,
            pooled_projections=step.pooled_prompt_embeds, timestep=step.timestep, img_ids=step.img_ids,
            txt_ids=step.txt_ids, guidance=(step.guidance if step.guidance is not None else state["guidance"])
            if net.config.guidance_embeds else None,
            joint_attention_kwargs=attention or None, return_dict=False)
        repeat = net.input_hint_block is not None  # XLabs ControlNets repeat their few double-block residuals
        blocks, single_blocks = state["blocks"]
        return {"controlnet_block_samples": spread(double, blocks, repeat),
                "controlnet_single_block_samples": spread(single, single_blocks)}


def _control_input(backbone, net, image, info) -> torch.Tensor:
    """The control image at the output size: pixels in [-1, 1] (input_hint_block) or packed VAE latents (mode)."""
    pixels = backbone.pipe.image_processor.preprocess(open_image(image, "--control-image").convert("RGB"),
                                                      height=info.height, width=info.width)
    if net.input_hint_block is not None:
        return pixels.to(device=info.device, dtype=info.dtype)
    vae = backbone.vae
    device = backbone.execution_device if backbone.offload else vae.device
    latents = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist.mode()
    latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
    return _pack(latents.to(device=info.device, dtype=info.dtype))


def _pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, 2R, 2C') -> (B, R*C', 4C): one token per 2x2 latent patch, as FluxPipeline packs latents."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


class ControlNetAdapter(Adapter):
    """A FLUX ControlNet and the control image(s) it follows; `scale` is its conditioning scale."""

    name = "controlnet"

    def __init__(self, pretrained: str, config: dict, *, scale: float = 1.0, image=None, mode: int | None = None):
        self.source, self.config, self.scale = str(pretrained), config, float(scale)
        self.image, self.mode = image, mode
        self.model: FluxControlNetModel | None = None
        self.union = config.get("num_mode") is not None
        self._check_mode(mode)

    @classmethod
    def from_pretrained(cls, pretrained: str, *, scale: float = 1.0, image=None, mode: int | None = None,
                        **options) -> "ControlNetAdapter":
        """Read the config (weights load in `apply`, once the backbone's widths are known to fit)."""
        if options:
            raise InputError(f"unknown ControlNet option(s): {', '.join(sorted(options))}")
        if image is not None:
            open_image(image, "--control-image")  # a missing or unreadable file fails now
        return cls(pretrained, read_config(str(pretrained)), scale=scale, image=image, mode=mode)

    def _check_mode(self, mode) -> None:
        if mode is None:
            return
        if not self.union:
            raise InputError(f"--control-mode {mode}: the ControlNet {self.source} is not a Union ControlNet "
                             f"(it has no modes)")
        if not 0 <= int(mode) < int(self.config["num_mode"]):
            raise InputError(f"--control-mode must be 0..{int(self.config['num_mode']) - 1} for {self.source}, got {mode}")

    def apply(self, backbone) -> None:
        """Check the architecture against the backbone, then load the weights next to its transformer."""
        transformer = backbone.transformer
        check_fits(self.config, transformer.config, 4 * int(backbone.vae.config.latent_channels), self.source)
        try:
            model = FluxControlNetModel.from_pretrained(self.source, torch_dtype=transformer.dtype)
        except Exception as exc:
            raise CheckpointError(f"cannot load the ControlNet {self.source}: {type(exc).__name__}: "
                                  f"{first_line(exc)}") from exc
        self.model = model.eval().requires_grad_(False)
        backbone.place_model(self.model)  # fp8 and streamed at the low-memory levels, like the transformer

    def remove(self, backbone) -> None:
        """Drop the ControlNet's weights."""
        self.model = None

    def controls(self, request) -> list[tuple]:
        """(image, mode, scale) for each control this adapter runs: its own image, else the request's images."""
        if self.image is not None:
            return [(self.image, self.mode, self.scale)]
        if request is None or not request.control_images:
            return []
        modes = list(request.control_modes) or [self.mode] * len(request.control_images)
        scales = list(request.control_scales) or [self.scale] * len(request.control_images)
        if not len(modes) == len(scales) == len(request.control_images):
            raise InputError("give one control mode and one control scale per control image (or none)")
        return list(zip(request.control_images, modes, scales))

    def check_request(self, request) -> None:
        """InputError without a control image, or with a mode this ControlNet does not have."""
        controls = self.controls(request)
        if not controls:
            raise InputError(f"the ControlNet {self.source} needs a control image (--control-image FILE)")
        for image, mode, _ in controls:
            open_image(image, "--control-image")
            if self.union and mode is None:
                raise InputError(f"the ControlNet {self.source} is a Union ControlNet: give --control-mode "
                                 f"(0..{int(self.config['num_mode']) - 1})")
            self._check_mode(mode)

    def guide(self, request) -> Guide | None:
        if self.model is None:
            raise InputError(f"the ControlNet {self.source} is not applied to a backbone")
        return ControlGuide(self, self.controls(request))

    def describe(self) -> str:
        mode = f"#mode{self.mode}" if self.mode is not None else ""
        return f"{self.name}:{self.source}{mode}@{self.scale:g}"

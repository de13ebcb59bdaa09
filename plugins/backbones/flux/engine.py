"""The Flux generation engine: conditioning (+ negative, request, guides) -> final packed latents, through the ONE
loop in sampling.py.

What each path adds to that loop:
- plain: one transformer call per step;
- true CFG (`negative`, scale > 1): a second call with the negative conditioning, v = v_neg + s (v - v_neg), each
  call with its own text padding mask;
- img2img (request.init_image): the VAE latents of the init image, noised to the first sigma run; the loop starts
  at `first_step(steps, strength)`;
- inpaint / outpaint (request.mask / request.outpaint): after each step the latents outside the mask are reset to
  the init latents noised to the new sigma (FluxInpaintPipeline's blending);
- guides (x2i_core.Guide, from adapter plugins): extra inputs merged into every transformer call (see
  x2i_core.interfaces.adapter for the keys), and an after-step hook.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from x2i_core import STEP_KEYS, Conditioning, InputError, LatentsInfo, StepInputs

from .canvas import init_tensors
from .sampling import denoise, draw_noise, first_step, image_ids, noised, pack, schedule


@dataclass
class Branch:
    """One conditioning as the transformer takes it (positive, or true CFG's negative)."""

    name: str
    prompt: torch.Tensor
    pooled: torch.Tensor
    txt_ids: torch.Tensor
    attention_kwargs: dict


def _branch(backbone, name: str, conditioning: Conditioning, height: int, width: int, batch: int) -> Branch:
    if conditioning.prompt_embeds.shape[0] == 1 and batch > 1:
        conditioning = conditioning.repeat(batch)  # one negative prompt for every image
    prompt, pooled = backbone._embeds(conditioning)
    mask = backbone.joint_attention_mask(conditioning, height, width)
    txt_ids = torch.zeros(prompt.shape[1], 3, device=prompt.device, dtype=prompt.dtype)
    return Branch(name, prompt, pooled, txt_ids, {} if mask is None else {"attention_mask": mask})


def _merge(extras: Sequence[dict]) -> dict[str, Any]:
    """Combine the guides' step inputs: residual lists are summed, attention kwargs merged, tokens concatenated."""
    merged: dict[str, Any] = {}
    for extra in extras:
        unknown = set(extra) - STEP_KEYS
        if unknown:
            raise InputError(f"a guide returned unknown step input(s) {', '.join(sorted(unknown))}; "
                             f"the Flux engine takes {', '.join(sorted(STEP_KEYS))}")
        for key, value in extra.items():
            if value is None:
                continue
            if key not in merged:
                merged[key] = dict(value) if key == "joint_attention_kwargs" else value
            elif key in ("controlnet_block_samples", "controlnet_single_block_samples"):
                merged[key] = [a + b for a, b in zip(merged[key], value)]
            elif key == "joint_attention_kwargs":
                merged[key].update(value)
            elif key in ("image_tokens", "image_ids", "channels"):
                dim = {"image_tokens": 1, "image_ids": 0, "channels": 2}[key]
                merged[key] = torch.cat([merged[key], value], dim=dim)
            else:
                merged[key] = merged[key] or value
    return merged


def _call(backbone, latents, timestep, guidance, branch: Branch, img_ids, extra: dict) -> torch.Tensor:
    """One transformer call with the guides' extras; returns the prediction for the latents' own tokens."""
    hidden, ids = latents, img_ids
    attention = {**branch.attention_kwargs, **extra.get("joint_attention_kwargs", {})}
    if "channels" in extra:
        hidden = torch.cat([hidden, extra["channels"].to(hidden.dtype)], dim=2)
    if "image_tokens" in extra:
        hidden = torch.cat([hidden, extra["image_tokens"].to(hidden.dtype)], dim=1)
        ids = torch.cat([ids, extra["image_ids"].to(ids.dtype)], dim=0)
        if "attention_mask" in attention:  # the appended image tokens are real keys
            mask = attention["attention_mask"]
            more = torch.ones(*mask.shape[:-1], extra["image_tokens"].shape[1], dtype=mask.dtype, device=mask.device)
            attention["attention_mask"] = torch.cat([mask, more], dim=-1)
    out = backbone.transformer(
        hidden_states=hidden, timestep=timestep, guidance=guidance, pooled_projections=branch.pooled,
        encoder_hidden_states=branch.prompt, txt_ids=branch.txt_ids, img_ids=ids,
        controlnet_block_samples=extra.get("controlnet_block_samples"),
        controlnet_single_block_samples=extra.get("controlnet_single_block_samples"),
        controlnet_blocks_repeat=bool(extra.get("controlnet_blocks_repeat", False)),
        joint_attention_kwargs=attention, return_dict=False,
    )[0]
    return out[:, : latents.shape[1]]


def _encode_init(backbone, pixels: torch.Tensor, generators: list, dtype) -> torch.Tensor:
    """Packed VAE latents of the init image, one posterior sample per image with its own generator (so image i is
    the image `--seed SEED+i --num-images 1` makes), scaled and shifted as Flux expects."""
    vae = backbone.vae
    device = backbone.execution_device if backbone.offload else vae.device
    pixels = pixels.to(device=device, dtype=vae.dtype)
    rows = [vae.encode(pixels).latent_dist.sample(generator=g) for g in generators]
    latents = (torch.cat(rows) - vae.config.shift_factor) * vae.config.scaling_factor
    return pack(latents.to(device=backbone.execution_device, dtype=dtype))


@torch.no_grad()
def run(
    backbone,
    conditioning: Conditioning,
    *,
    height: int,
    width: int,
    num_inference_steps: int,
    guidance_scale: float,
    generator=None,
    latents: torch.Tensor | None = None,
    on_step: Callable[[int, int], None] | None = None,
    negative: Conditioning | None = None,
    true_cfg_scale: float = 1.0,
    request=None,
    guides: Sequence[Any] = (),
) -> torch.Tensor:
    """Final packed latents (B, rows*cols, C) for B = conditioning rows. `latents`, if given, replace the seeded noise."""
    device, dtype = backbone.execution_device, backbone.transformer.dtype
    batch = conditioning.prompt_embeds.shape[0]
    rows, cols = backbone.latent_grid(height, width)
    channels = int(backbone.vae.config.latent_channels)
    timesteps, sigmas = schedule(backbone.pipe.scheduler, num_inference_steps, rows * cols, device)
    generators = generator if isinstance(generator, list) else [generator] * batch

    init = mask = None
    if request is not None and request.init_image is not None:
        start = first_step(num_inference_steps, request.effective_strength())  # < steps for any strength > 0
        timesteps, sigmas = timesteps[start:], sigmas[start:]
        pixels, mask_pixels = init_tensors(request, height, width, backbone.pipe.image_processor,
                                           backbone.vae_scale_factor)
        init = _encode_init(backbone, pixels, generators, dtype)
        if mask_pixels is not None:
            small = torch.nn.functional.interpolate(mask_pixels, size=(rows * 2, cols * 2))
            mask = pack(small.to(device=device, dtype=dtype).repeat(batch, channels, 1, 1))
    if latents is None:
        noise = draw_noise(batch, channels, rows, cols, generator, device, dtype)
    else:
        noise = latents.to(device=device, dtype=dtype)
    start_latents = noise if init is None else noised(init, noise, sigmas[0])

    branches = [_branch(backbone, "positive", conditioning, height, width, batch)]
    use_cfg = negative is not None and true_cfg_scale > 1
    if use_cfg:
        branches.append(_branch(backbone, "negative", negative, height, width, batch))
    img_ids = image_ids(rows, cols, device, branches[0].prompt.dtype)
    guidance = None
    if backbone.transformer.config.guidance_embeds:
        guidance = torch.full([1], guidance_scale, device=device, dtype=torch.float32).expand(batch)
    info = LatentsInfo(batch=batch, height=height, width=width, rows=rows, cols=cols, device=device, dtype=dtype,
                       timesteps=timesteps, generators=list(generators))
    states = [(guide, guide.prepare(backbone, request, info)) for guide in guides]

    def step_inputs(i, timestep, x, branch: Branch, sigma_next=None) -> StepInputs:
        return StepInputs(index=i, timestep=timestep, latents=x, branch=branch.name, prompt_embeds=branch.prompt,
                          pooled_prompt_embeds=branch.pooled, txt_ids=branch.txt_ids, img_ids=img_ids,
                          guidance=guidance, joint_attention_kwargs=branch.attention_kwargs, sigma_next=sigma_next)

    def velocity(x: torch.Tensor, i: int, t: torch.Tensor) -> torch.Tensor:
        timestep = t.expand(batch).to(x.dtype) / 1000
        out = []
        for branch in branches:
            extra = _merge([g.step_inputs(s, step_inputs(i, timestep, x, branch)) for g, s in states]) if states else {}
            out.append(_call(backbone, x, timestep, guidance, branch, img_ids, extra))
        if not use_cfg:
            return out[0]
        return out[1] + true_cfg_scale * (out[0] - out[1])

    def after_step(x: torch.Tensor, i: int, sigma_next: torch.Tensor) -> torch.Tensor:
        if mask is not None:
            x = (1 - mask) * noised(init, noise, sigma_next) + mask * x
        for guide, state in states:
            x = guide.after_step(state, step_inputs(i, None, x, branches[0], sigma_next))
        return x

    return denoise(velocity, start_latents, timesteps, sigmas, on_step=on_step,
                   after_step=after_step if (mask is not None or states) else None)

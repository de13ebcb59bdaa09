"""FLUX.1 Fill and Kontext: the same FluxBackbone and loop, plus the image inputs their transformers were trained on.

Both are driven by an AlignNet aligned on FLUX.1-dev (their text pathway is FLUX.1-dev's). Each adds one guide to
the engine's loop (x2i_core.Guide, the same extension point adapter plugins use):

- Fill (FluxFillPipeline's layout): every call gets the VAE latents of the masked init image and the mask folded
  into the latent grid, concatenated along the channel axis (so in_channels is 384, not 64: the noise channels
  come from the VAE). Needs --init-image with --mask or --outpaint; the engine keeps the unmasked area.
- Kontext (FluxKontextPipeline's layout): the VAE latents of the image to edit (--init-image) are appended to
  the image sequence with position ids marked 1; their prediction is dropped. The loop starts from pure noise
  (no img2img), and the source image is resized to the requested output size, never to diffusers' ~1024².
"""
from __future__ import annotations

from dataclasses import replace

import torch

from x2i_core import Guide, IncompatibleError, InputError

from .backbone import FluxBackbone
from .canvas import init_tensors
from .sampling import image_ids, pack


def _vae_latents(backbone, pixels: torch.Tensor, generators: list | None, *, sample: bool) -> torch.Tensor:
    """Packed, scaled and shifted VAE latents of (1, 3, H, W) pixels, one row per generator (or one, the mode)."""
    vae = backbone.vae
    device = backbone.execution_device if backbone.offload else vae.device
    dist = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist
    rows = [dist.sample(generator=g) for g in generators] if sample else [dist.mode()]
    latents = (torch.cat(rows) - vae.config.shift_factor) * vae.config.scaling_factor
    return pack(latents.to(device=backbone.execution_device, dtype=backbone.transformer.dtype))


def _fold_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 1, H, W) pixel mask -> (B, factor², H/factor, W/factor): each latent cell keeps its factor x factor pixels."""
    b, _, h, w = mask.shape
    folded = mask[:, 0].view(b, h // factor, factor, w // factor, factor).permute(0, 2, 4, 1, 3)
    return folded.reshape(b, factor * factor, h // factor, w // factor)


class FillGuide(Guide):
    """Masked-image latents + folded mask as extra channels of every transformer call."""

    def prepare(self, backbone, request, info):
        pixels, mask = init_tensors(request, info.height, info.width, backbone.pipe.image_processor,
                                    backbone.vae_scale_factor)
        masked = pixels * (1 - mask)  # the repaint area becomes 0 (mid grey), as FluxFillPipeline does
        image = _vae_latents(backbone, masked, info.generators, sample=True)
        folded = pack(_fold_mask(mask, backbone.vae_scale_factor)).to(device=info.device, dtype=info.dtype)
        return torch.cat([image, folded.expand(image.shape[0], -1, -1)], dim=2)

    def step_inputs(self, state, step):
        return {"channels": state}


class KontextGuide(Guide):
    """The source image's latents appended to the image sequence (position ids index 1)."""

    def __init__(self, image):
        self.image = image

    def prepare(self, backbone, request, info):
        source = replace(request, init_image=self.image, mask=None, outpaint=None)
        pixels, _ = init_tensors(source, info.height, info.width, backbone.pipe.image_processor,
                                 backbone.vae_scale_factor)
        tokens = _vae_latents(backbone, pixels, None, sample=False).expand(info.batch, -1, -1)
        ids = image_ids(info.rows, info.cols, info.device, info.dtype, index=1.0)
        return tokens, ids

    def step_inputs(self, state, step):
        tokens, ids = state
        return {"image_tokens": tokens, "image_ids": ids}


class SourceTokensPadded(Guide):
    """Another guide whose ControlNet residuals cover the image latents only: zeros for Kontext's source tokens,
    which follow the latents in the sequence (the residuals would not fit the longer sequence otherwise)."""

    def __init__(self, inner: Guide):
        self.inner = inner

    def prepare(self, backbone, request, info):
        return self.inner.prepare(backbone, request, info), info.rows * info.cols

    def step_inputs(self, state, step):
        inner, tokens = state
        extra = dict(self.inner.step_inputs(inner, step))
        padded: dict[int, torch.Tensor] = {}  # residual lists repeat tensors: pad each once
        for key in ("controlnet_block_samples", "controlnet_single_block_samples"):
            if extra.get(key) is not None:
                extra[key] = [padded.setdefault(id(r), torch.nn.functional.pad(r, (0, 0, 0, tokens)))
                              for r in extra[key]]
        return extra

    def after_step(self, state, step):
        return self.inner.after_step(state[0], step)


class FluxFillBackbone(FluxBackbone):
    """FLUX.1 Fill: inpaint/outpaint with the Fill transformer (masked image + mask as extra input channels)."""

    def check_layout(self) -> None:
        """IncompatibleError unless in_channels = latents + masked-image latents + the folded mask (384 for FLUX)."""
        latent, taken = 4 * int(self.vae.config.latent_channels), int(self.transformer.config.in_channels)
        fill = 2 * latent + 4 * self.vae_scale_factor**2
        if taken != fill:
            raise IncompatibleError(f"flux-fill needs a FLUX.1 Fill transformer ({fill} input channels), this one takes "
                                    f"{taken}: load it with another preset or --backbone flux")

    def check_request(self, request) -> None:
        """InputError unless the request has an init image and a mask or outpaint margins."""
        if request is None or request.init_image is None or (request.mask is None and not request.outpaint):
            raise InputError("flux-fill repaints part of an image: give --init-image with --mask or --outpaint")

    def denoise(self, conditioning, *, request=None, guides=(), **kwargs):
        self.check_request(request)
        return super().denoise(conditioning, request=request, guides=(FillGuide(), *guides), **kwargs)


class FluxKontextBackbone(FluxBackbone):
    """FLUX.1 Kontext: edits --init-image, which enters the transformer's sequence (the loop starts from noise)."""

    def check_request(self, request) -> None:
        """InputError for img2img/inpaint options Kontext does not use."""
        if request is None:
            return
        extra = [opt for opt, val in (("--strength", request.strength), ("--mask", request.mask),
                                      ("--outpaint", request.outpaint)) if val is not None]
        if extra:
            raise InputError(f"flux-kontext edits from pure noise with --init-image in its sequence: "
                             f"{', '.join(extra)} not used (use flux-dev or flux-fill for those)")

    def denoise(self, conditioning, *, request=None, guides=(), **kwargs):
        self.check_request(request)
        if request is None or request.init_image is None:  # Kontext without an image is text-to-image
            return super().denoise(conditioning, request=request, guides=guides, **kwargs)
        guide = KontextGuide(request.init_image)
        # the engine must not run img2img from this image: it only enters the sequence
        others = tuple(SourceTokensPadded(g) for g in guides)
        return super().denoise(conditioning, request=replace(request, init_image=None), guides=(guide, *others),
                               **kwargs)

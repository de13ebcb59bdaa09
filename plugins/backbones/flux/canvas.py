"""The pixels that enter the Flux DiT for img2img, inpaint and outpaint: init image, repaint mask, padded canvas.

img2img/inpaint/outpaint are engine features of the Flux backbone, not adapter plugins: they load no weights,
and what they change (where the loop starts on the schedule, the starting latents from the VAE, blending with
the VAE latents after each step) is the sampling loop itself, which every backbone family owns. They are asked
for with GenerationRequest fields (init_image, strength, mask, outpaint), checked before any model loads.
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from x2i_core import open_image


def mask_processor(vae_scale_factor: int) -> VaeImageProcessor:
    """Grayscale, binarised at 0.5 (white = 1 = repaint), not normalised: as FluxInpaintPipeline prepares masks."""
    return VaeImageProcessor(vae_scale_factor=vae_scale_factor * 2, do_normalize=False, do_binarize=True,
                             do_convert_grayscale=True)


def outpaint_canvas(image: Image.Image, mask: Image.Image | None, margins) -> tuple[Image.Image, Image.Image]:
    """Pad the image by (left, top, right, bottom) pixels, repeating its edge pixels (a neutral start for strength < 1);
    the mask is white on the new area, and the user's mask (or black) on the original one."""
    left, top, right, bottom = margins
    pixels = np.pad(np.asarray(image), ((top, bottom), (left, right), (0, 0)), mode="edge")
    inner = np.asarray(mask) if mask is not None else np.zeros(image.size[::-1], dtype=np.uint8)
    full = np.pad(inner, ((top, bottom), (left, right)), mode="constant", constant_values=255)
    return Image.fromarray(pixels), Image.fromarray(full.astype(np.uint8))


def init_tensors(request, height: int, width: int, image_processor: VaeImageProcessor,
                 vae_scale_factor: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(image (1, 3, H, W) in [-1, 1] float32, mask (1, 1, H, W) in {0, 1} or None), resized to height x width."""
    image = open_image(request.init_image, "--init-image").convert("RGB")
    mask = open_image(request.mask, "--mask").convert("L") if request.mask is not None else None
    if request.outpaint:
        image, mask = outpaint_canvas(image, mask, request.outpaint)
    pixels = image_processor.preprocess(image, height=height, width=width).to(torch.float32)
    if mask is None:
        return pixels, None
    return pixels, mask_processor(vae_scale_factor).preprocess(mask, height=height, width=width)

"""LightControlAdapter: a LightControlNet (x2i_core.LightControlNet) as a per-step guide on the Flux backbone's loop.

The branch reads the source image (its own `image` option, else `request.inputs["lightcontrol"]`, else the first
image of the prompt: the image the MLLM reads is the image being edited) as VAE latents at the output size, once per
generation, and returns one residual per double block as `controlnet_block_samples` at every transformer call,
both branches of true CFG included (the source image is content, not the instruction that CFG amplifies).
"""
from __future__ import annotations

import torch

from x2i_core import Adapter, CheckpointError, Guide, InputError, LightControlNet, first_line, open_image
from x2i_core import encode_lightcontrol_source


def _source_of(request):
    """The source image a request gives: its lightcontrol input, else the prompt's first image, else None."""
    if request is None:
        return None
    if request.inputs.get("lightcontrol") is not None:
        return request.inputs["lightcontrol"]
    prompt = request.prompt
    media = prompt.media() if prompt is not None and hasattr(prompt, "media") else []
    images = [part.value for part in media if part.modality == "image"]
    return images[0] if images else None


class LightControlGuide(Guide):
    """Adds the branch's residuals (computed once from the source image) to every transformer call."""

    def __init__(self, adapter: "LightControlAdapter", image, scale: float):
        self.adapter, self.image, self.scale = adapter, image, scale

    def prepare(self, backbone, request, info):
        images = list(self.image) if isinstance(self.image, (list, tuple)) else [self.image]
        if len(images) not in (1, info.batch):
            raise InputError(f"give one LightControl source image, or one per image made ({info.batch}), "
                             f"not {len(images)}")
        pixels = torch.cat([backbone.pipe.image_processor.preprocess(
            open_image(image, "--lightcontrol-image").convert("RGB"), height=info.height, width=info.width)
            for image in images])
        vae = backbone.vae
        with torch.no_grad():
            latents = encode_lightcontrol_source(vae, pixels)
            net = self.adapter.model
            latents = latents.to(device=net.device, dtype=net.dtype)
            residuals = net(latents, scale=self.scale)
        return [r.to(device=info.device, dtype=info.dtype).expand(info.batch, *r.shape[1:]) for r in residuals]

    def step_inputs(self, state, step):
        return {"controlnet_block_samples": state}


class LightControlAdapter(Adapter):
    """A LightControl branch folder (config.json + safetensors); `scale` multiplies its residuals.

    The source: the `image` option, else request.inputs["lightcontrol"] (one image, or a list of one per image
    made: batched edits of different sources), else the prompt's first image."""

    name = "lightcontrol"

    def __init__(self, pretrained: str, *, scale: float = 1.0, image=None):
        self.source, self.scale, self.image = str(pretrained), float(scale), image
        self.model: LightControlNet | None = None
        try:
            self.config = LightControlNet.load_config(self.source)
        except Exception as exc:
            raise CheckpointError(f"cannot read the LightControl folder {pretrained}: {type(exc).__name__}: "
                                  f"{first_line(exc)}") from exc
        if self.config.get("_class_name") != "LightControlNet":
            raise CheckpointError(f"{pretrained} is a {self.config.get('_class_name') or 'model of unknown class'}, "
                                  f"not a LightControl branch (made by x2i train-lightcontrol)")

    @classmethod
    def from_pretrained(cls, pretrained: str, *, scale: float = 1.0, image=None, **options) -> "LightControlAdapter":
        """Read the config (the weights load in `apply`, once the transformer is known to fit)."""
        if options:
            raise InputError(f"unknown LightControl option(s): {', '.join(sorted(options))}")
        if image is not None:
            open_image(image, "--lightcontrol-image")
        return cls(pretrained, scale=scale, image=image)

    def apply(self, backbone) -> None:
        """Check the branch against the transformer and VAE, then load its weights next to the transformer."""
        transformer = backbone.transformer
        probe = LightControlNet.from_config(self.config)  # no weights yet: the architecture check comes first
        probe.check_fits(transformer.config, int(backbone.vae.config.latent_channels), f"the LightControl {self.source}")
        try:
            model = LightControlNet.from_pretrained(self.source, torch_dtype=transformer.dtype)
        except Exception as exc:
            raise CheckpointError(f"cannot load the LightControl {self.source}: {type(exc).__name__}: "
                                  f"{first_line(exc)}") from exc
        self.model = model.to(backbone.execution_device).eval().requires_grad_(False)

    def remove(self, backbone) -> None:
        self.model = None

    def source_image(self, request):
        return self.image if self.image is not None else _source_of(request)

    def check_request(self, request) -> None:
        """InputError without a source image (no --lightcontrol-image and no --image)."""
        image = self.source_image(request)
        if image is None:
            raise InputError(f"the LightControl {self.source} needs the source image: --image FILE (the MLLM reads it "
                             f"too) or --lightcontrol-image FILE")
        for one in image if isinstance(image, (list, tuple)) else [image]:
            open_image(one, "--lightcontrol-image")

    def guide(self, request) -> Guide | None:
        if self.model is None:
            raise InputError(f"the LightControl {self.source} is not applied to a backbone")
        scale = float((request.adapter_scales or {}).get(self.name, self.scale)) if request is not None else self.scale
        return LightControlGuide(self, self.source_image(request), scale)

"""IPAdapter: the FLUX IP-Adapter, loaded with diffusers' FluxIPAdapterMixin.load_ip_adapter, fed per step.

The adapter adds image-prompt key/value projections to every double block's attention (FluxIPAdapterAttnProcessor)
and an image projection (CLIP image embedding -> a few tokens of the prompt width). Each transformer call then takes
`joint_attention_kwargs={"ip_adapter_image_embeds": [(B, 1, 768)]}`; the transformer projects them itself.

Facts checked in diffusers 0.42: the loader reads the XLabs layout (`ip_adapter_proj_model.*`,
`double_blocks.N.processor.ip_adapter_double_stream_{k,v}_proj.*`) and the diffusers one (`image_proj.*`,
`ip_adapter.N.to_{k,v}_ip.*`); the image encoder must be a CLIP vision model with a projection (ViT-L/14: 768-d),
there is no SigLIP path; once loaded, every transformer call needs image embeddings, so `remove` unloads it.
With true CFG the negative branch gets the embedding of a black image, as diffusers' FluxPipeline does.
"""
from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

from x2i_core import Adapter, CheckpointError, Guide, IncompatibleError, InputError, first_line, open_image

DEFAULT_IMAGE_ENCODER = "openai/clip-vit-large-patch14"
DEFAULT_FILE = "ip_adapter.safetensors"
_PROJ_KEYS = ("ip_adapter_proj_model.proj.weight", "image_proj.proj.weight")


def locate(pretrained: str, weight_name: str | None) -> tuple[str, str]:
    """(folder or hub id, file name); only .safetensors files (never pickles)."""
    path = Path(pretrained).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"only .safetensors IP-Adapter files are read (never pickles), got {path.name}")
        return str(path.parent), path.name
    if path.is_dir():
        name = weight_name or DEFAULT_FILE
        if not (path / name).is_file():
            raise CheckpointError(f"the IP-Adapter folder {path} has no {name}")
        return str(path), name
    if pretrained.startswith((".", "/", "~")) or pretrained.count("/") != 1:
        raise CheckpointError(f"IP-Adapter file or folder not found: {pretrained}")
    return pretrained, weight_name or DEFAULT_FILE


def read_shapes(folder: str, name: str) -> dict[str, tuple]:
    """{key: shape} of the IP-Adapter file (a hub file is fetched first); nothing is unpickled."""
    path = Path(folder) / name
    if not path.is_file():
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(folder, name))
        except Exception as exc:
            raise CheckpointError(f"cannot fetch the IP-Adapter {folder}/{name}: {type(exc).__name__}: "
                                  f"{first_line(exc)}") from exc
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"cannot read the IP-Adapter file {path}: {type(exc).__name__}: {first_line(exc)}") from exc


def image_embed_dim(image_encoder: str) -> int:
    """The projection width of a CLIP vision encoder folder or hub id; IncompatibleError for other encoders."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(image_encoder)
    except Exception as exc:
        raise CheckpointError(f"cannot read the IP-Adapter image encoder {image_encoder}: {type(exc).__name__}: "
                              f"{first_line(exc)}") from exc
    if config.model_type not in ("clip", "clip_vision_model"):
        raise IncompatibleError(f"the FLUX IP-Adapter needs a CLIP vision encoder with a projection (ViT-L/14, 768-d); "
                                f"{image_encoder} is a {config.model_type} model")
    return int(config.projection_dim)


def check_fits(shapes: dict[str, tuple], transformer, embed_dim: int, source: str) -> None:
    """IncompatibleError unless the file's projections fit this transformer and the image encoder's width."""
    proj = next((shapes[k] for k in _PROJ_KEYS if k in shapes), None)
    keys = [k for k in shapes if k.endswith(("_k_proj.weight", "to_k_ip.weight"))]
    if proj is None or not keys:
        raise IncompatibleError(f"{source} is not a FLUX IP-Adapter (no image projection or IP key/value projections)")
    width, inner = int(transformer.config.joint_attention_dim), int(transformer.inner_dim)
    blocks = len(transformer.transformer_blocks)
    tokens = proj[0] // width if proj[0] % width == 0 else 0
    wrong = []
    if tokens not in (4, 16):
        wrong.append(f"image projection of {proj[0]} rows for prompt width {width}")
    if len(keys) != blocks:
        wrong.append(f"{len(keys)} attention blocks vs {blocks}")
    if any(shapes[k] != (inner, width) for k in keys):
        wrong.append(f"key projections {shapes[keys[0]]} vs ({inner}, {width})")
    if wrong:
        raise IncompatibleError(f"the IP-Adapter {source} was made for another architecture: {wrong[0]}")
    if proj[1] != embed_dim:
        raise IncompatibleError(f"the IP-Adapter {source} takes {proj[1]}-d image embeddings but its image encoder "
                                f"gives {embed_dim}-d (it needs its own CLIP ViT-L/14)")


class IPGuide(Guide):
    """Image embeddings for every transformer call (a black image's for true CFG's negative branch)."""

    def __init__(self, adapter: "IPAdapter", image, scale: float):
        self.adapter, self.image, self.scale = adapter, image, scale

    def prepare(self, backbone, request, info):
        from PIL import Image

        pipe = backbone.pipe
        pipe.set_ip_adapter_scale(self.scale)
        encoder = pipe.image_encoder
        device = next(encoder.parameters()).device
        picture = open_image(self.image, "--ip-image").convert("RGB")
        black = Image.new("RGB", picture.size)
        pixels = pipe.feature_extractor([picture, black], return_tensors="pt").pixel_values
        embeds = encoder(pixels.to(device=device, dtype=encoder.dtype)).image_embeds
        embeds = embeds.to(device=info.device, dtype=info.dtype)[:, None]  # (2, 1, D): one image per prompt
        return {"positive": embeds[:1].expand(info.batch, -1, -1), "negative": embeds[1:].expand(info.batch, -1, -1)}

    def step_inputs(self, state, step):
        embeds = state["negative" if step.branch == "negative" else "positive"]
        return {"joint_attention_kwargs": {"ip_adapter_image_embeds": [embeds]}}


class IPAdapter(Adapter):
    """The FLUX IP-Adapter and the reference image it follows; `scale` weighs its attention."""

    name = "ip-adapter"

    def __init__(self, folder: str, weight_name: str, shapes: dict, *, image_encoder: str, embed_dim: int,
                 source: str, scale: float = 1.0, image=None):
        self.folder, self.weight_name, self.shapes = folder, weight_name, shapes
        self.image_encoder, self.embed_dim = image_encoder, embed_dim
        self.source, self.scale, self.image = source, float(scale), image
        self.backbone = None

    @classmethod
    def from_pretrained(cls, pretrained: str, *, scale: float = 1.0, image=None, image_encoder: str | None = None,
                        weight_name: str | None = None, **options) -> "IPAdapter":
        """Read the file's shapes and the image encoder's config (weights load in `apply`)."""
        if options:
            raise InputError(f"unknown IP-Adapter option(s): {', '.join(sorted(options))}")
        if image is not None:
            open_image(image, "--ip-image")
        folder, name = locate(str(pretrained), weight_name)
        shapes = read_shapes(folder, name)
        encoder = image_encoder or DEFAULT_IMAGE_ENCODER
        return cls(folder, name, shapes, image_encoder=encoder, embed_dim=image_embed_dim(encoder),
                   source=str(pretrained), scale=scale, image=image)

    def apply(self, backbone) -> None:
        """Check the shapes, then load the projections and the image encoder into the backbone's pipeline."""
        transformer = backbone.transformer
        check_fits(self.shapes, transformer, self.embed_dim, self.source)
        if getattr(transformer, "encoder_hid_proj", None) is not None:
            raise InputError("only one IP-Adapter at a time: this backbone already has one")
        # on a backbone already set to a memory level: take the offload hooks off around the load and put them back,
        # as diffusers' own LoRA loader does, so the new projections join the offloaded blocks
        from diffusers.hooks.group_offloading import _maybe_remove_and_reapply_group_offloading
        from diffusers.loaders.lora_base import _func_optionally_disable_offloading

        model_offload, _, group_offload = _func_optionally_disable_offloading(backbone.pipe)
        try:
            backbone.pipe.load_ip_adapter(self.folder, weight_name=self.weight_name,
                                          image_encoder_pretrained_model_name_or_path=self.image_encoder,
                                          image_encoder_dtype=transformer.dtype)
        except Exception as exc:
            raise CheckpointError(f"cannot load the IP-Adapter {self.source}: {type(exc).__name__}: "
                                  f"{first_line(exc)}") from exc
        finally:
            if model_offload:
                backbone.pipe.enable_model_cpu_offload(device=backbone.execution_device)
            elif group_offload:
                _maybe_remove_and_reapply_group_offloading(transformer)
        encoder = backbone.pipe.image_encoder.requires_grad_(False)
        if not model_offload:  # with model offload its hook brings it to the accelerator when it runs
            encoder.to(backbone.execution_device)
        transformer.requires_grad_(False)
        self.backbone = backbone

    def remove(self, backbone) -> None:
        """Restore the plain attention processors and drop the image encoder."""
        backbone.pipe.unload_ip_adapter()
        self.backbone = None

    def reference(self, request):
        """The image to follow: the one loaded with the adapter, else the request's first reference image."""
        if self.image is not None:
            return self.image
        return request.reference_images[0] if request is not None and request.reference_images else None

    def check_request(self, request) -> None:
        """InputError without a reference image (once loaded, every transformer call needs one)."""
        image = self.reference(request)
        if image is None:
            raise InputError(f"the IP-Adapter {self.source} needs a reference image (--ip-image FILE)")
        open_image(image, "--ip-image")

    def guide(self, request) -> Guide | None:
        if self.backbone is None:
            raise InputError(f"the IP-Adapter {self.source} is not applied to a backbone")
        scale = float((request.adapter_scales if request is not None else {}).get(self.name, self.scale))
        return IPGuide(self, self.reference(request), scale)

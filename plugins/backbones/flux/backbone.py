"""FluxBackbone: a frozen FLUX.1 transformer + VAE + flow-matching scheduler, conditioned by embeddings only.

The T5 and CLIP text encoders are never loaded here (the reference loads and ignores ~9.7 GB of them);
`load_teacher()` loads them separately, for alignment only.

Facts checked in diffusers 0.42 (transformer_flux.py / pipeline_flux.py):
- `transformer_blocks[i].attn` returns (image_out, text_out), both after to_out / to_add_out and before
  the gated residual; `single_transformer_blocks[i].attn` returns one tensor, text tokens first then
  image tokens, with no output projection (pre_only), before concatenation with the MLP branch.
- The transformer multiplies `timestep` and `guidance` by 1000 itself; FluxPipeline passes the
  scheduler's t / 1000, i.e. the sigma in [0, 1]. `predict` therefore takes the sigma as is.
- `joint_attention_kwargs={"attention_mask": bool (B, 1, 1, Ltxt + Limg)}` reaches every attention
  (joint sequence = [text; image]) and masks padded text keys.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

from x2i_core import (AttentionPoint, CheckpointError, Conditioning, DiTBackbone, GenerationRequest, Guide,
                      IncompatibleError, InputError,
                      TeacherConditioner, first_line, folder_model_type, load_component, resolve_device,
                      resolve_memory_level)

from . import engine, sampling
from .memory import apply_memory_level, is_offloaded, place_extra_model, quantization_config
from .transformer_file import check_transformer_file, load_transformer_file

COMPONENTS = {"transformer": FluxTransformer2DModel, "vae": AutoencoderKL, "scheduler": FlowMatchEulerDiscreteScheduler}


def _looks_like_path(pretrained: str) -> bool:
    return pretrained.startswith((".", "/", "~")) or "\\" in pretrained or pretrained.count("/") > 1


def _check_folder(folder: Path) -> None:
    """A local pipeline folder must hold transformer/, vae/ and scheduler/ with their configs."""
    missing = []
    for sub in COMPONENTS:
        cfg = "scheduler_config.json" if sub == "scheduler" else "config.json"
        if not (folder / sub / cfg).is_file():
            missing.append(f"{sub}/{cfg}")
    if not missing:
        return
    if (folder / "config.json").is_file() and "transformer/config.json" in missing:
        # a fine-tuned transformer saved on its own: it needs the VAE and scheduler of its base model
        what = folder_model_type(folder) or "a single model"
        raise CheckpointError(
            f"{folder} holds {what} on its own, not a Flux pipeline folder: put it as transformer/ "
            f"in a copy of its base model's folder (with vae/ and scheduler/) and pass that folder"
        )
    raise CheckpointError(
        f"{folder} is not a Flux pipeline folder: missing {', '.join(missing)} "
        f"(expected the diffusers layout with transformer/, vae/ and scheduler/)"
    )


def load_components(pretrained: str, dtype: torch.dtype, *, transformer_file: str | None = None,
                    quantization=None) -> dict[str, Any]:
    """Load transformer, VAE and scheduler from a diffusers folder or hub id; CheckpointError on failure.

    With `transformer_file`, the transformer comes from that .safetensors file on the folder's architecture;
    `quantization` (a diffusers BitsAndBytesConfig) quantises the transformer as it loads."""
    quantized = {} if quantization is None else {"quantization_config": quantization}
    folder = Path(pretrained).expanduser()
    if folder.is_dir():
        _check_folder(folder)
        source = str(folder)
    elif folder.exists() or _looks_like_path(pretrained):
        raise CheckpointError(f"backbone checkpoint folder not found: {pretrained}")
    else:
        source = pretrained  # a hub id
    loaded = {}
    if transformer_file is not None:
        loaded["transformer"] = load_transformer_file(transformer_file, source, dtype, **quantized)
    for sub, cls in COMPONENTS.items():
        if sub in loaded:
            continue
        try:
            if sub == "scheduler":
                loaded[sub] = cls.from_pretrained(source, subfolder=sub)
            elif sub == "transformer":
                loaded[sub] = cls.from_pretrained(source, subfolder=sub, torch_dtype=dtype, **quantized)
            else:
                loaded[sub] = cls.from_pretrained(source, subfolder=sub, torch_dtype=dtype)
        except Exception as exc:  # corrupt safetensors, hub offline, wrong config ...
            hint = "" if folder.is_dir() else _hub_hint(source, sub)
            reason = f"{type(exc).__name__}: {first_line(exc)}{hint}"
            raise CheckpointError(f"cannot load the Flux {sub} from {pretrained}: {reason}") from exc
    return loaded


def _lora_file(lora: str, weight_name: str | None) -> str:
    """The LoRA to load: `weight_name` inside a local folder or a hub repository (downloaded), else `lora` as given."""
    folder = Path(lora).expanduser()
    if weight_name is not None and folder.is_dir() and (folder / weight_name).is_file():
        return str(folder / weight_name)
    if weight_name is None or folder.exists() or _looks_like_path(lora):
        return lora  # the lora plugin reads it, or says it is not there
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(lora, weight_name)
    except Exception as exc:  # offline, gated, missing file
        raise CheckpointError(f"cannot fetch the LoRA {lora}/{weight_name}: {type(exc).__name__}: "
                              f"{first_line(exc)} (check the network, or pass a local LoRA file with the lora option)") from exc


def _hub_hint(repo_id: str, sub: str) -> str:
    """When a hub checkpoint is not in the local cache, diffusers reports a missing file even if the hub was
    unreachable or the repository gated: say what to check."""
    from huggingface_hub import try_to_load_from_cache

    cfg = "scheduler_config.json" if sub == "scheduler" else "config.json"
    if isinstance(try_to_load_from_cache(repo_id, f"{sub}/{cfg}"), str):
        return ""
    return (" (not in the local Hugging Face cache: check the network, accept the model's licence on the hub "
            "and log in with `hf auth login` for gated models, or pass a local folder)")


class FluxBackbone(DiTBackbone):
    """FLUX.1 (dev, schnell, shuttle, any Flux folder) as an X2I backbone, wrapping a text-encoder-free FluxPipeline."""

    supports_true_cfg = True
    supports_alignment = True
    supports_guides = True

    def __init__(
        self,
        pipe: FluxPipeline,
        *,
        source: str,
        device: torch.device,
        dtype: torch.dtype,
        offload: bool = False,
        default_steps: int = 28,
        default_guidance: float = 3.5,
        max_sequence_length: int = 512,
        default_size: int = 1024,
        default_true_cfg: float = 1.0,
        memory: str | None = None,
        weight_adapters: Sequence = (),
        own_alignment: bool = False,
    ):
        self.pipe = pipe
        self.source = source
        self.device = device
        self.dtype = dtype
        #: the --memory level (memory.py has each level's recipe); --offload is "balanced"
        self.memory = resolve_memory_level(memory, offload)
        self.offload = is_offloaded(self.memory)
        #: True when an AlignNet aligned on another FLUX variant will not fit (Flex.1-alpha: 8 double blocks)
        self.own_alignment = own_alignment
        self.default_steps = default_steps
        self.default_guidance = default_guidance
        self.max_sequence_length = max_sequence_length
        self.default_size = default_size
        self.default_true_cfg = default_true_cfg
        self.notes: list[str] = []  # things a user should be told (the CLI prints them)
        pipe.transformer.requires_grad_(False).eval()
        pipe.vae.requires_grad_(False).eval()
        pipe.set_progress_bar_config(disable=True)
        self.check_layout()
        for adapter in weight_adapters:  # a preset's own LoRA (flux-turbo), before any fp8 cast or offload
            adapter.apply(self)
        self.notes += apply_memory_level(pipe, self.memory, device, dtype)

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str,
        *,
        device=None,
        dtype=None,
        offload: bool = False,
        default_steps: int = 28,
        default_guidance: float = 3.5,
        max_sequence_length: int = 512,
        default_size: int = 1024,
        default_true_cfg: float = 1.0,
        memory: str | None = None,
        transformer_file: str | None = None,
        lora: str | None = None,
        lora_scale: float = 1.0,
        lora_weight_name: str | None = None,
        own_alignment: bool = False,
        quantize: str | None = None,
        **options,
    ) -> "FluxBackbone":
        """Load transformer/, vae/ and scheduler/ from a diffusers Flux folder or hub id (never the text encoders).

        `memory`: high|balanced|low|lowest (memory.py). `transformer_file`: a .safetensors fine-tune loaded in place
        of the folder's transformer. `lora`: a LoRA loaded through the `lora` adapter plugin (flux-turbo's Turbo-Alpha),
        `lora_weight_name` its file inside a folder or hub repository. `quantize`: int8|nf4 (bitsandbytes, CUDA).
        """
        if options:
            raise InputError(f"unknown Flux backbone option(s): {', '.join(sorted(options))}")
        device, dtype = resolve_device(device, dtype)
        level = resolve_memory_level(memory, offload)  # a bad level fails before gigabytes load
        quantization = quantization_config(quantize, level, device, dtype)
        if transformer_file is not None:
            check_transformer_file(transformer_file)
        adapters = []
        if lora:  # loaded (a small file) before the backbone's gigabytes, so a bad LoRA fails first
            adapters.append(load_component("adapter", "lora", _lora_file(lora, lora_weight_name), scale=lora_scale))
        parts = load_components(str(pretrained), dtype, transformer_file=transformer_file, quantization=quantization)
        pipe = FluxPipeline(
            scheduler=parts["scheduler"], vae=parts["vae"], transformer=parts["transformer"],
            text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
        )
        return cls(
            pipe, source=str(pretrained), device=device, dtype=dtype, offload=offload,
            default_steps=default_steps, default_guidance=default_guidance,
            max_sequence_length=max_sequence_length, default_size=default_size, default_true_cfg=default_true_cfg,
            memory=memory, weight_adapters=adapters, own_alignment=own_alignment,
        )

    def place_model(self, module: torch.nn.Module) -> None:
        """Put a model that runs at every step next to the transformer (a ControlNet) where this memory level wants it."""
        place_extra_model(module, self.memory, self.execution_device, self.dtype)

    def check_layout(self) -> None:
        """IncompatibleError unless the transformer takes exactly the packed image latents (a Fill or Control
        transformer takes more channels: variants.py)."""
        latent, taken = 4 * int(self.vae.config.latent_channels), int(self.transformer.config.in_channels)
        if taken != latent:
            raise IncompatibleError(
                f"this transformer takes {taken} input channels, not the {latent} of the image latents: a FLUX.1 Fill "
                f"checkpoint loads with --backbone flux-fill (FLUX.1 Control checkpoints are not supported)")

    # -- shapes ------------------------------------------------------------------------------
    @property
    def transformer(self) -> FluxTransformer2DModel:
        """The frozen FluxTransformer2DModel."""
        return self.pipe.transformer

    @property
    def vae(self) -> AutoencoderKL:
        """The frozen VAE (decodes unpacked latents)."""
        return self.pipe.vae

    @property
    def prompt_embed_dim(self) -> int:
        """D = transformer.config.joint_attention_dim (4096 for FLUX.1)."""
        return int(self.transformer.config.joint_attention_dim)

    @property
    def pooled_embed_dim(self) -> int:
        """P = transformer.config.pooled_projection_dim (768 for FLUX.1)."""
        return int(self.transformer.config.pooled_projection_dim)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along a side (8 for FLUX.1)."""
        return int(self.pipe.vae_scale_factor)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (VAE downsampling x 2x2 latent packing)."""
        return 2 * self.vae_scale_factor

    @property
    def execution_device(self) -> torch.device:
        """Where the transformer runs (the accelerator even when offloaded)."""
        return self.pipe._execution_device

    def latent_grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of packed latent tokens: the image sequence is rows * cols long."""
        self.check_size(height, width)
        m = self.size_multiple
        return height // m, width // m

    # -- conditioning plumbing ---------------------------------------------------------------
    def _embeds(self, conditioning: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        dev, dtype = self.execution_device, self.transformer.dtype
        prompt = conditioning.prompt_embeds.to(device=dev, dtype=dtype)
        pooled = conditioning.pooled_prompt_embeds.to(device=dev, dtype=dtype)
        if prompt.shape[-1] != self.prompt_embed_dim or pooled.shape[-1] != self.pooled_embed_dim:
            raise InputError(
                f"conditioning widths {prompt.shape[-1]}/{pooled.shape[-1]} do not fit this backbone "
                f"({self.prompt_embed_dim}/{self.pooled_embed_dim})"
            )
        return prompt, pooled

    def joint_attention_mask(self, conditioning: Conditioning, height: int, width: int) -> torch.Tensor | None:
        """Bool (B, 1, 1, Ltxt + Limg) key mask hiding padded text tokens; None when nothing is padded."""
        mask = conditioning.attention_mask
        if mask is None or bool(mask.all()):
            return None
        rows, cols = self.latent_grid(height, width)
        mask = mask.to(device=self.execution_device, dtype=torch.bool)
        image = torch.ones(mask.shape[0], rows * cols, dtype=torch.bool, device=mask.device)
        return torch.cat([mask, image], dim=1)[:, None, None, :]

    # -- sampling ----------------------------------------------------------------------------
    def noise_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Packed pure noise (B, rows*cols, 4 * latent channels), drawn exactly as FluxPipeline.prepare_latents does."""
        rows, cols = self.latent_grid(height, width)
        channels = int(self.vae.config.latent_channels)
        return sampling.draw_noise(batch, channels, rows, cols, generator, self.execution_device, self.transformer.dtype)

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
        """One transformer call; `timestep` is the sigma in [0, 1] (1 = pure noise), passed as FluxPipeline does.

        Gradients flow to the conditioning (alignment trains through this call); the transformer stays frozen.
        """
        prompt, pooled = self._embeds(conditioning)
        rows, cols = self.latent_grid(height, width)
        batch, dev = latents.shape[0], self.execution_device
        timestep = torch.as_tensor(timestep, device=dev, dtype=latents.dtype).reshape(-1).expand(batch)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((batch,), float(guidance_scale), device=dev, dtype=torch.float32)
        img_ids = sampling.image_ids(rows, cols, dev, prompt.dtype)
        txt_ids = torch.zeros(prompt.shape[1], 3, device=dev, dtype=prompt.dtype)
        mask = self.joint_attention_mask(conditioning, height, width)
        return self.transformer(
            hidden_states=latents.to(device=dev, dtype=self.transformer.dtype),
            timestep=timestep,
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=prompt,
            txt_ids=txt_ids,
            img_ids=img_ids,
            joint_attention_kwargs=None if mask is None else {"attention_mask": mask},
            return_dict=False,
        )[0]

    @torch.no_grad()
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
        negative: Conditioning | None = None,
        true_cfg_scale: float = 1.0,
        request: GenerationRequest | None = None,
        guides: Sequence[Guide] = (),
    ) -> torch.Tensor:
        """Final packed latents from the one Flux loop (engine.run): plain, true CFG, img2img/inpaint/outpaint
        (from `request`: init_image, strength, mask, outpaint) and adapter guides, in any combination.

        With `negative` and `true_cfg_scale` > 1: classifier-free guidance, v = v_neg + s (v - v_neg), with each
        conditioning's own padding mask (diffusers' true-CFG path shares one mask between both passes).
        """
        self.check_size(height, width)
        if num_inference_steps < 1:
            raise InputError(f"the number of steps must be at least 1, got {num_inference_steps}")
        return engine.run(self, conditioning, height=height, width=width, num_inference_steps=num_inference_steps,
                          guidance_scale=guidance_scale, generator=generator, latents=latents, on_step=on_step,
                          negative=negative, true_cfg_scale=true_cfg_scale, request=request, guides=guides)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, height: int, width: int) -> list:
        """Packed latents -> PIL images (unpack, undo the VAE scaling and shift, decode), as FluxPipeline does."""
        vae = self.vae
        rows, cols = self.latent_grid(height, width)
        spatial = sampling.unpack(latents, rows, cols)
        spatial = spatial / vae.config.scaling_factor + vae.config.shift_factor
        # With model offload, vae.decode's forward hook moves the VAE to the accelerator itself.
        device = self.execution_device if self.offload else vae.device
        image = vae.decode(spatial.to(device=device, dtype=vae.dtype), return_dict=False)[0]
        self.pipe.maybe_free_model_hooks()
        return self.pipe.image_processor.postprocess(image, output_type="pil")

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [-1, 1] -> packed clean latents: VAE mean, shift and scaling as FluxPipeline's
        img2img prepares its image latents (the inverse of `decode`). Gradients do not flow (the VAE is frozen)."""
        vae = self.vae
        self.check_size(int(pixels.shape[-2]), int(pixels.shape[-1]))
        with torch.no_grad():
            spatial = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
        spatial = (spatial - vae.config.shift_factor) * vae.config.scaling_factor
        return sampling.pack(spatial).to(device=self.execution_device, dtype=self.transformer.dtype)

    # -- alignment ---------------------------------------------------------------------------
    def attention_points(self) -> list[AttentionPoint]:
        """Every double block's attn (returns (image_out, text_out)), then every single block's attn
        (returns [text; image] joint output, no out-projection), in forward order."""
        points = [
            AttentionPoint(f"transformer_blocks.{i}.attn", block.attn, "double")
            for i, block in enumerate(self.transformer.transformer_blocks)
        ]
        points += [
            AttentionPoint(f"single_transformer_blocks.{i}.attn", block.attn, "single")
            for i, block in enumerate(self.transformer.single_transformer_blocks)
        ]
        return points

    def load_teacher(self) -> TeacherConditioner:
        """FLUX's own CLIP-L + T5 conditioning from the same checkpoint (alignment only)."""
        from .teacher import FluxTeacher

        device = self.device
        return FluxTeacher.from_pretrained(
            self.source, device=device, dtype=self.dtype, max_sequence_length=self.max_sequence_length
        )

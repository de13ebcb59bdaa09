"""Load what alignment needs by registry name or folder: encoder, backbone, teacher, AlignNet."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..aligner_record import resolve_model
from ..alignnet import AlignNet
from ..errors import CheckpointError, InputError
from ..limits import check_memory, training_bytes
from ..plugins import load_component
from .config import AlignConfig
from .teacher_cache import TeacherCache


def load_encoder(cfg: AlignConfig, device, dtype=None):
    """The MultimodalEncoder named by --encoder (and --encoder-path); with --init of an AlignNet that records a
    prompt template (a converted reference one), in that template: alignment goes on with the inputs it learned."""
    template = init_prompt_template(cfg)
    options = {"template": template} if template is not None else {}
    return load_component("encoder", cfg.encoder, cfg.encoder_path, device=device, dtype=dtype or cfg.dtype, **options)


def init_prompt_template(cfg: AlignConfig) -> str | None:
    """The prompt_template --init's AlignNet records (None without --init, or when it records none)."""
    if not cfg.init:
        return None
    try:
        return AlignNet.load_config(str(cfg.init)).get("prompt_template")
    except Exception:  # a bad --init fails in load_init, with its own one-line message
        return None


def load_backbone(cfg: AlignConfig, device, dtype=None):
    """The DiTBackbone named by --backbone (and --backbone-path), its transformer frozen."""
    options = {}
    if cfg.teacher_max_length:
        options["max_sequence_length"] = int(cfg.teacher_max_length)
    backbone = load_component("backbone", cfg.backbone, cfg.backbone_path, device=device, dtype=dtype or cfg.dtype, **options)
    backbone.transformer.requires_grad_(False).eval()
    return backbone


def transformer_device(backbone) -> torch.device:
    """Where the backbone's transformer computes."""
    return next(backbone.transformer.parameters()).device


def transformer_dtype(backbone) -> torch.dtype:
    """The dtype of the backbone's transformer weights."""
    return next(backbone.transformer.parameters()).dtype


def load_teacher(cfg: AlignConfig, backbone):
    """The teacher conditioning: a precomputed cache (--teacher-cache) or the backbone's own text encoders."""
    if cfg.teacher_cache:
        return TeacherCache(cfg.teacher_cache, device=transformer_device(backbone), dtype=transformer_dtype(backbone))
    return backbone.load_teacher()


def check_training_memory(cfg: AlignConfig, backbone, device) -> None:
    """InputError when one micro-step's estimated working memory exceeds what `device` has free (models loaded)."""
    needed = training_bytes(backbone, cfg.batch_size, cfg.resolution, cfg.teacher_max_length or 512,
                            blocks=len(backbone.attention_points()), checkpointing=cfg.gradient_checkpointing)
    check_memory(needed, device, f"--batch-size {cfg.batch_size} at --resolution {cfg.resolution}",
                 "lower --batch-size or --resolution (or use --gradient-checkpointing)")


def load_init(cfg: AlignConfig) -> AlignNet | None:
    """--init's AlignNet in float32 (None without --init): cheap, so a bad one fails before the big models load."""
    if not cfg.init:
        return None
    try:
        return AlignNet.from_pretrained(cfg.init, torch_dtype=torch.float32)
    except CheckpointError as exc:
        raise CheckpointError(f"--init: {exc}") from None


def recorded_models(cfg: AlignConfig) -> dict[str, str | None]:
    """This run's encoder and backbone as the AlignNet records them: registered names and the checkpoints actually
    loaded (hub ids, or absolute folders), so `--aligner DIR` alone finds them from any working folder. Resolving
    is cheap, so an unknown name fails here, before anything loads."""
    encoder, encoder_checkpoint = resolve_model("encoder", cfg.encoder, cfg.encoder_path)
    backbone, backbone_checkpoint = resolve_model("backbone", cfg.backbone, cfg.backbone_path)
    return {"encoder": encoder, "encoder_checkpoint": encoder_checkpoint,
            "backbone": backbone, "backbone_checkpoint": backbone_checkpoint}


ARCHITECTURE = ("fusion", "skip_layers", "token_kernel", "context_layers", "masked_pool")  # AlignNet options --init fixes


def adopt_init_architecture(cfg: AlignConfig, init: AlignNet | None) -> tuple[AlignConfig, list[str]]:
    """With --init, the AlignNet's architecture is the init's, whatever the architecture options say. Returns
    the config with those options set to the init's (so the run's record and checkpoints name what was really
    trained, not the options' defaults) and the options that changed, as "--fusion conv -> scale"."""
    if init is None:
        return cfg, []
    taken = {k: init.config[k] if k in init.config else getattr(cfg, k) for k in ARCHITECTURE}
    changed = [f"--{k.replace('_', '-')} {getattr(cfg, k)} -> {v}" for k, v in taken.items() if getattr(cfg, k) != v]
    return replace(cfg, **taken), changed


def build_alignnet(cfg: AlignConfig, encoder, backbone, init: AlignNet | None = None,
                   models: dict[str, str | None] | None = None) -> AlignNet:
    """A fresh AlignNet sized for the encoder and backbone, or --init's weights (`init`, if already loaded); either
    records the models (`models`, default `recorded_models(cfg)`) and the training resolution in its config."""
    record = {**(models or recorded_models(cfg)), "resolution": cfg.resolution}
    net = init if init is not None else load_init(cfg)
    if net is not None:
        net.check_fits(encoder, backbone)
        net.register_to_config(**record)
        return net.float()
    if cfg.skip_layers >= encoder.num_layers:
        raise InputError(f"--skip-layers {cfg.skip_layers} leaves nothing to fuse: {encoder.identity} gives "
                         f"{encoder.num_layers} hidden states")
    return AlignNet(
        num_layers=encoder.num_layers, hidden_size=encoder.hidden_size,
        prompt_dim=backbone.prompt_embed_dim, pooled_dim=backbone.pooled_embed_dim,
        fusion=cfg.fusion, masked_pool=cfg.masked_pool, skip_layers=cfg.skip_layers,
        token_kernel=cfg.token_kernel, context_layers=cfg.context_layers, **record,
    )

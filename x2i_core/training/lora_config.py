"""LoraTrainConfig: the settings of `x2i train-lora` (x2i_core.lora_training), each with its CLI help. No torch."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import InputError
from ..limits import check_finite
from .config import TrainingConfig, opt

#: settings that shape the trained tensors: a resume that changes one is refused
LORA_SHAPE = ("rank", "alpha", "target_modules", "train_aligner")


@dataclass
class LoraTrainConfig(TrainingConfig):
    """Settings of `x2i train-lora` (the shared ones come from TrainingConfig)."""

    data: str = opt("", "A folder with a JSONL index of {\"inputs\": [image, ...], \"instruction\": ..., \"target\": "
                    "image} lines, paths relative to the index (docs/training.md).", metavar="DIR",
                    show_default=False)
    aligner: str | None = opt(None, "The AlignNet (name or folder) that conditions the transformer; frozen unless "
                              "--train-aligner.")
    encoder: str | None = opt(None, "Encoder name or folder (default: what the AlignNet records).")
    encoder_path: str | None = opt(None, "Checkpoint for the encoder.", metavar="DIR|HUB_ID")
    backbone: str | None = opt(None, "Backbone name or folder (default: what the AlignNet records).")
    backbone_path: str | None = opt(None, "Checkpoint for the backbone.", metavar="DIR|HUB_ID")
    rank: int = opt(16, "LoRA rank.")
    alpha: float | None = opt(None, "LoRA alpha (default: the rank, so the update is not rescaled).")
    target_modules: str = opt("to_q,to_k,to_v,to_out.0", "Comma-separated module names the LoRA wraps in every "
                              "block (peft's suffix match).")
    train_aligner: bool = opt(False, "Train the AlignNet too (saved next to the LoRA in DIR/aligner).")
    guidance: float | None = opt(None, "Guidance value for guidance-distilled transformers (default: the backbone's, "
                                 "as at inference).")
    lr: float = opt(1e-4, "Peak AdamW learning rate.")
    warmup: int = opt(20, "Linear warm-up updates before the cosine decay.")

    def targets(self) -> list[str]:
        names = [t.strip() for t in str(self.target_modules).split(",") if t.strip()]
        if not names:
            raise InputError("--target-modules names no module")
        return names

    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    def validate(self) -> None:
        """InputError, naming the option, for settings that cannot work."""
        self.validate_common()
        check_finite({"--alpha": self.alpha, "--guidance": self.guidance})
        if not self.data:
            raise InputError("no training data given (--data DIR)")
        if self.rank < 1:
            raise InputError(f"--rank must be at least 1, got {self.rank}")
        if self.alpha is not None and self.alpha <= 0:
            raise InputError(f"--alpha must be positive, got {self.alpha:g}")
        self.targets()


def pick_models(cfg: LoraTrainConfig) -> LoraTrainConfig:
    """Encoder and backbone: given, else recorded by the AlignNet, else the default world's (with its aligner)."""
    from ..aligner_record import fill_models, read_record
    from ..plugins import get_registry

    given = {"encoder": cfg.encoder, "encoder_path": cfg.encoder_path, "backbone": cfg.backbone,
             "backbone_path": cfg.backbone_path}
    chosen, _ = fill_models(read_record(cfg.aligner), given)
    if chosen["encoder"] and chosen["backbone"] and cfg.aligner:
        return replace(cfg, **chosen)
    world = get_registry().default_world()
    if world is None or chosen["encoder"] or chosen["backbone"]:
        raise InputError("name the models: --aligner (an AlignNet that records its encoder and backbone) or "
                         "--encoder, --backbone and --aligner")
    return replace(cfg, encoder=world.encoder, backbone=world.backbone, aligner=cfg.aligner or world.aligner)

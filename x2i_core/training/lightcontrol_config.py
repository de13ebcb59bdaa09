"""LightControlConfig: the settings of `x2i train-lightcontrol` (plain data, no torch: the CLI builds its options
from these fields before anything heavy loads), and how its models are picked."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import InputError
from .config import TrainingConfig, opt


@dataclass
class LightControlConfig(TrainingConfig):
    """Settings of `x2i train-lightcontrol` (the shared ones come from TrainingConfig)."""

    data: str = opt("", "A folder with a JSONL index of {\"inputs\": [source, ...], \"instruction\", \"target\"} "
                    "(docs/training.md).", metavar="DIR", show_default=False)
    encoder: str | None = opt(None, "Encoder name or folder (default: the AlignNet's record, else the default world).")
    encoder_path: str | None = opt(None, "Checkpoint for the encoder.", metavar="DIR|HUB_ID")
    backbone: str | None = opt(None, "Backbone name or folder (default: the AlignNet's record, else the default world).")
    backbone_path: str | None = opt(None, "Checkpoint for the backbone.", metavar="DIR|HUB_ID")
    aligner: str | None = opt(None, "The AlignNet (name or folder) that conditions the transformer (kept frozen).")
    hidden_channels: str = opt("128,256", "Widths of each block's conv module: after its stem and ResNet blocks.")
    drop_instruction: float = opt(0.1, "Probability of training on the empty prompt (true CFG's negative).")
    cache_inputs: bool = opt(False, "Keep each example's conditioning and VAE latents in memory after first use (small "
                             "data sets: the frozen MLLM, AlignNet and VAE then run once per example).")
    guidance: float | None = opt(None, "Guidance value for guidance-distilled transformers (default: the backbone's).")
    warmup: int = opt(20, "Linear warm-up updates before the cosine decay.")
    lr: float = opt(1e-4, "Peak AdamW learning rate.")

    def widths(self) -> tuple[int, int]:
        try:
            a, b = (int(x) for x in str(self.hidden_channels).split(","))
        except ValueError:
            raise InputError(f"--hidden-channels takes two widths like 128,256, got {self.hidden_channels!r}") from None
        if a < 1 or b < 1:
            raise InputError(f"--hidden-channels must be positive, got {self.hidden_channels!r}")
        return a, b

    def validate(self) -> None:
        self.validate_common()
        if not self.data:
            raise InputError("no training data given (--data DIR)")
        if not 0 <= self.drop_instruction < 1:
            raise InputError(f"--drop-instruction must be in [0, 1), got {self.drop_instruction:g}")
        self.widths()


def pick_models(cfg: LightControlConfig) -> LightControlConfig:
    """Encoder, backbone and aligner: given, else recorded by the AlignNet, else the default world's."""
    from ..aligner_record import fill_models, read_record
    from ..plugins import get_registry

    given = {"encoder": cfg.encoder, "encoder_path": cfg.encoder_path, "backbone": cfg.backbone,
             "backbone_path": cfg.backbone_path}
    chosen, _ = fill_models(read_record(cfg.aligner), given)
    if chosen["encoder"] and chosen["backbone"]:
        return replace(cfg, **chosen)
    world = get_registry().default_world()
    if world is None or chosen["encoder"] or chosen["backbone"]:
        raise InputError("name the models: --encoder, --backbone and --aligner (or an --aligner that records them)")
    return replace(cfg, encoder=world.encoder, backbone=world.backbone, aligner=cfg.aligner or world.aligner)

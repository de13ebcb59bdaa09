"""TrainingConfig: the settings every trainer shares, each written once with its CLI help (field metadata).

Plain data (no torch). A trainer's config subclasses it (AlignConfig, LoraConfig, ...) and adds its own fields;
`x2i_core.training.options.config_options` turns the fields into click options, so a setting, its default and
its help live in one place. A subclass may redeclare a field to change its default or help.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError

OPTIMIZERS = ("adamw", "adamw8bit")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
DTYPES = ("bf16", "fp16", "fp32")


def opt(default: Any = None, help: str = "", *, factory=None, **cli) -> Any:
    """A dataclass field whose metadata carries its CLI help and extras (option, choices, metavar, flag_value,
    negation, hidden, show_default); see options.config_options."""
    meta = {"help": help, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainingConfig:
    """Settings shared by `x2i align`, `x2i train-lora` and `x2i train-lightcontrol`."""

    output_dir: str = opt("", "Output folder: the trained weights, a JSON record of the run, train_log.csv and "
                          "checkpoints/.", option="-o/--output", metavar="DIR", show_default=False)
    steps: int = opt(1000, "Optimizer updates.")
    batch_size: int = opt(1, "Examples per process per micro-step.")
    grad_accum: int = opt(1, "Micro-steps per optimizer update.")
    lr: float = opt(1e-4, "Peak AdamW learning rate.")
    warmup: int = opt(100, "Linear warm-up updates before the cosine decay.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm.")
    weight_decay: float = opt(0.01, "AdamW decoupled weight decay.")
    optimizer: str = opt("adamw", "adamw (torch) or adamw8bit (bitsandbytes, CUDA).", choices=OPTIMIZERS)
    seed: int = opt(0, "Seeds data order, noise and timesteps.")
    shuffle_buffer: int = opt(10000, "Examples in the shuffle buffer.")
    checkpoint_every: int = opt(500, "Write a checkpoint (atomically) every N updates.")
    keep_checkpoints: int = opt(2, "How many to keep.")
    resume: str | None = opt(None, "Continue from the newest checkpoint in -o DIR (or the folder given): same data "
                             "order, optimizer and schedule, so the loss follows the uninterrupted run.",
                             flag_value="latest", metavar="[CKPT]")
    stop_after: int | None = opt(None, "Stop after N updates of this run with a checkpoint, as if interrupted "
                                 "(for chunked jobs).")
    mixed_precision: str = opt("auto", "Autocast of the trained module: auto = bf16 on CUDA, none on CPU. Frozen "
                               "models use --dtype.", choices=MIXED_PRECISION)
    dtype: str | None = opt(None, "Frozen models' dtype (default bf16 on CUDA, fp32 on CPU).", choices=DTYPES)
    gradient_checkpointing: bool = opt(True, "Recompute transformer blocks in the backward pass (needed for 1024 px "
                                       "on one GPU).", negation="no-gradient-checkpointing")
    log_csv: str | None = opt(None, "Per-step CSV of every loss term (default DIR/train_log.csv).", metavar="FILE")
    tensorboard: bool = opt(False, "Also log to DIR/tensorboard (needs the tensorboard package).")
    device: str | None = opt(None, "cuda, cuda:1 or cpu (default: CUDA when available; multi-GPU via "
                             "torchrun/accelerate).")
    progress: bool = opt(True, "No progress bar.", option="--quiet", invert=True)

    def validate_common(self) -> None:
        """InputError, naming the option, for shared settings that cannot work."""
        from ..limits import check_finite

        check_finite({"--lr": self.lr, "--max-grad-norm": self.max_grad_norm, "--weight-decay": self.weight_decay})
        for name, allowed in (("optimizer", OPTIMIZERS), ("mixed_precision", MIXED_PRECISION)):
            if getattr(self, name) not in allowed:
                raise InputError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        if not self.output_dir:
            raise InputError("no output folder given (-o DIR)")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.stop_after is not None and self.stop_after < 1:
            raise InputError(f"--stop-after must be at least 1, got {self.stop_after}")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise InputError(f"--lr must be positive, got {self.lr:g}")
        if self.warmup < 0 or self.max_grad_norm <= 0:
            raise InputError("--warmup must be >= 0 and --max-grad-norm > 0")
        if self.weight_decay < 0:
            raise InputError(f"--weight-decay must be >= 0, got {self.weight_decay:g}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings (saved in checkpoints and records)."""
        return asdict(self)

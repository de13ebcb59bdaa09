"""AlignConfig: every setting of an alignment run, with defaults that follow the X2I paper.

Plain data (no torch), so the CLI can build it before anything heavy is imported.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError
from ..limits import MAX_TEXT_TOKENS, check_finite, check_image_size, check_range

LOSSES = ("rkl", "kl", "js", "mse")
TIMESTEP_MODES = ("one", "uniform", "shifted")
INTERMEDIATE_LATENTS = ("noise", "teacher")
OPTIMIZERS = ("adamw", "adamw8bit")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
TERM_KINDS = ("double_image", "double_text", "single_image", "single_text")


@dataclass
class AlignConfig:
    """Settings of `x2i align` / `train_alignnet`. Defaults are the paper's unless a comment says why not."""

    data: list[str] = field(default_factory=list)  # prompt files: .txt, .jsonl, WebDataset .tar (globs, {a,b}, {000..009})
    output_dir: str = ""
    encoder: str = "qwen2.5-vl-7b"
    backbone: str = "flux-dev"  # the paper's teacher
    encoder_path: str | None = None
    backbone_path: str | None = None
    init: str | None = None  # start from an existing AlignNet folder
    text_key: str = "text"  # JSON key of the caption in JSONL lines and WebDataset .json members

    # optimisation (the reference: AdamW, lr 1e-4, cosine with 100 warm-up steps, clip 1.0, batch 1 per GPU)
    steps: int = 8000  # the paper reports 98.2% of the teacher's Performance Ratio after 8K steps
    batch_size: int = 1  # prompts per process per micro-step
    grad_accum: int = 1
    lr: float = 1e-4
    warmup: int = 100
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01  # torch's AdamW default
    # The reference used 8-bit AdamW; for a ~35 M-parameter AlignNet it saves only ~0.2 GB, so exact AdamW is
    # the default and adamw8bit (bitsandbytes) an option.
    optimizer: str = "adamw"

    # distillation (the reference: reverse KL at temperature 3 over all 76 attention outputs, t = 1)
    loss: str = "rkl"
    temperature: float = 3.0
    image_side_only: bool = False
    term_weights: dict[str, float] = field(default_factory=lambda: {k: 1.0 for k in TERM_KINDS})
    timesteps: str = "one"
    intermediate_latents: str = "noise"  # for t < 1: what x_t is built from (there are no images)
    resolution: int = 1024
    guidance: float | None = None  # None: the backbone's own default (3.5 for FLUX.1-dev)
    teacher_max_length: int | None = None  # None: the backbone's own (512 T5 tokens for FLUX.1-dev)
    # Share of prompts replaced by "" so the AlignNet also learns the teacher's empty-prompt conditioning:
    # what true classifier-free guidance (--true-cfg at generation) uses as its negative.
    empty_prompt_prob: float = 0.0
    hidden_noise: float = 0.0  # Gaussian noise on the encoder states, x each layer's RMS (sampling.perturb_hidden_states)

    # AlignNet shape
    fusion: str = "conv"
    skip_layers: int = 0  # leading hidden states (token embeddings first) a new AlignNet leaves out of its fusion
    token_kernel: int | None = None  # conv fusion's kernel extent along the sequence; None: 5, the paper's 5x5
    context_layers: int = 0  # bidirectional self-attention layers after the fusion (0: the paper's AlignNet)
    masked_pool: bool = True  # the reference averages padding too; masked is the fix (method.md)

    # machinery
    seed: int = 0
    shuffle_buffer: int = 10000
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: str | None = None  # "latest" or a checkpoint folder
    mixed_precision: str = "auto"  # auto: bf16 on CUDA, off on CPU (the reference trained in bf16)
    gradient_checkpointing: bool = True  # 1024 px through 57 blocks with grad needs it on one GPU
    device: str | None = None
    dtype: str | None = None  # frozen models' dtype; None: bf16 on CUDA, fp32 on CPU
    log_csv: str | None = None  # None: OUTPUT/train_log.csv
    tensorboard: bool = False
    teacher_cache: str | None = None  # use precomputed teacher embeddings instead of loading T5/CLIP
    progress: bool = True
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps in this run, as if killed

    def validate(self) -> None:
        """Raise InputError for settings that cannot work, naming the option."""
        # first: NaN passes every comparison below (nan <= 0 is False)
        check_finite({"--lr": self.lr, "--max-grad-norm": self.max_grad_norm, "--weight-decay": self.weight_decay,
                      "--temperature": self.temperature, "--hidden-noise": self.hidden_noise,
                      "--empty-prompt-prob": self.empty_prompt_prob, "--guidance": self.guidance,
                      **{f"--term-weights {k}": v for k, v in self.term_weights.items()}})
        choices = {
            "loss": (self.loss, LOSSES), "timesteps": (self.timesteps, TIMESTEP_MODES),
            "optimizer": (self.optimizer, OPTIMIZERS), "mixed_precision": (self.mixed_precision, MIXED_PRECISION),
            "intermediate_latents": (self.intermediate_latents, INTERMEDIATE_LATENTS),
            "fusion": (self.fusion, ("conv", "scale", "last")),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise InputError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {value!r}")
        if not self.data:
            raise InputError("no prompt data given (--data PATH)")
        if not self.output_dir:
            raise InputError("no output folder given (-o DIR)")
        for name in ("steps", "batch_size", "grad_accum", "resolution", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        # a batch is sampled at once: the same pixel budget as generation, no cap on the count of small images
        check_image_size(self.resolution, self.resolution, self.batch_size, width_option="--resolution",
                         height_option="--resolution", count_option="--batch-size", max_count=None)
        check_range("--teacher-max-length", self.teacher_max_length, 1, MAX_TEXT_TOKENS, " tokens")
        if self.lr <= 0 or self.temperature <= 0:
            raise InputError("--lr and the temperature must be positive")
        if self.warmup < 0 or self.max_grad_norm <= 0:
            raise InputError("--warmup must be >= 0 and --max-grad-norm > 0")
        if self.weight_decay < 0:
            raise InputError(f"--weight-decay must be >= 0, got {self.weight_decay:g}")
        if not 0 <= self.empty_prompt_prob < 1:
            raise InputError(f"--empty-prompt-prob must be in [0, 1), got {self.empty_prompt_prob:g}")
        if self.skip_layers < 0:
            raise InputError(f"--skip-layers must be >= 0, got {self.skip_layers}")
        if self.token_kernel is not None and (self.token_kernel < 1 or self.token_kernel % 2 == 0):
            raise InputError(f"--token-kernel must be a positive odd number, got {self.token_kernel}")
        if self.token_kernel is not None and self.fusion != "conv":
            raise InputError(f"--token-kernel applies to --fusion conv only, not {self.fusion}")
        if self.context_layers < 0:
            raise InputError(f"--context-layers must be >= 0, got {self.context_layers}")
        if self.hidden_noise < 0:
            raise InputError(f"--hidden-noise must be >= 0, got {self.hidden_noise:g}")
        if self.empty_prompt_prob and self.teacher_cache:
            raise InputError("--empty-prompt-prob cannot be used with --teacher-cache (the cache holds no empty prompt)")
        unknown = set(self.term_weights) - set(TERM_KINDS)
        if unknown:
            raise InputError(f"unknown term kind(s) {', '.join(sorted(unknown))}; use {', '.join(TERM_KINDS)}")

    def weights(self) -> dict[str, float]:
        """Per-kind term weights after --image-side-only (text-side kinds weigh 0)."""
        weights = {k: float(self.term_weights.get(k, 1.0)) for k in TERM_KINDS}
        if self.image_side_only:
            weights["double_text"] = weights["single_text"] = 0.0
        return weights

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain data (saved with checkpoints and the trained AlignNet)."""
        return asdict(self)


def parse_term_weights(text: str | None) -> dict[str, float]:
    """'double_text=0.5,single_text=0' -> weights for all four kinds (unnamed kinds weigh 1)."""
    weights = {k: 1.0 for k in TERM_KINDS}
    if not text:
        return weights
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in TERM_KINDS:
            raise InputError(f"--term-weights: expected KIND=WEIGHT with KIND in {', '.join(TERM_KINDS)}, got {item!r}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise InputError(f"--term-weights: {value!r} is not a number (in {item!r})") from None
        if not math.isfinite(weights[name]) or weights[name] < 0:
            raise InputError(f"--term-weights: weights must be finite and >= 0, got {item!r}")
    return weights

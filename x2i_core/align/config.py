"""AlignConfig: every setting of an alignment run, with defaults that follow the X2I paper.

Plain data (no torch), so the CLI can build it before anything heavy is imported.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InputError
from ..limits import MAX_TEXT_TOKENS, check_finite, check_image_size, check_range
from ..training.config import MIXED_PRECISION, OPTIMIZERS, TrainingConfig, opt

LOSSES = ("rkl", "kl", "js", "mse")
TIMESTEP_MODES = ("one", "uniform", "shifted")
INTERMEDIATE_LATENTS = ("noise", "teacher")
TERM_KINDS = ("double_image", "double_text", "single_image", "single_text")


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


@dataclass
class AlignConfig(TrainingConfig):
    """Settings of `x2i align` / `train_alignnet`. Defaults are the paper's unless a comment says why not.

    Each field's metadata is its `x2i align` option help (training.options builds the CLI from it)."""

    encoder: str = opt("qwen2.5-vl-7b", "Multimodal encoder: a registered name (qwen2.5-vl-7b, qwen2.5-vl-3b, ...) "
                       "or a model folder.")
    backbone: str = opt("flux-dev", "Backbone: a registered name (flux-dev, flux-schnell, shuttle-3-diffusion, flux) "
                        "or a Flux folder that also holds the teacher's text_encoder/ (CLIP) and text_encoder_2/ (T5).")
    encoder_path: str | None = opt(None, "Checkpoint (hub id or folder) for --encoder instead of its default.")
    backbone_path: str | None = opt(None, "Checkpoint (hub id or folder) for --backbone instead of its default.")
    # prompt files: .txt, .jsonl, WebDataset .tar (globs, {a,b}, {000..009})
    data: list[str] = opt(help="Prompt files, repeatable: .txt (one prompt a line), .jsonl (see --text-key), "
                          "WebDataset .tar shards (each sample's .json[--text-key] or .txt); folders, globs "
                          "('shards/*.tar') and brace lists ('shard-{000..099}.tar') work. UTF-8.",
                          factory=list, metavar="PATH")
    text_key: str = opt("text", "JSON key of the caption in JSONL lines and .json members.")
    output_dir: str = opt("", "Output folder: the final AlignNet (config.json + safetensors, loadable with "
                          "--aligner DIR), x2i_align.json (what it was trained for), train_log.csv and checkpoints/.",
                          option="-o/--output", metavar="DIR", show_default=False)
    init: str | None = opt(None, "Start from an existing AlignNet folder instead of random weights; its architecture "
                           "(fusion, skip and context layers, token kernel) is kept and the options for a new "
                           "AlignNet are ignored.", metavar="DIR")

    # optimisation (the reference: AdamW, lr 1e-4, cosine with 100 warm-up steps, clip 1.0, batch 1 per GPU)
    # the paper reports 98.2% of the teacher's Performance Ratio after 8K steps
    steps: int = opt(8000, "Optimizer updates (the paper reports 98.2% of the teacher after 8K; the reference ran "
                     "45-57K).")
    batch_size: int = opt(1, "Prompts per process per micro-step.")
    weight_decay: float = opt(0.01, "AdamW decoupled weight decay (larger values shrink weights that the training "
                              "prompts never exercise, which otherwise keep their random init).")  # torch's default
    # The reference used 8-bit AdamW; for a ~35 M-parameter AlignNet it saves only ~0.2 GB, so exact AdamW is
    # the default and adamw8bit (bitsandbytes) an option.
    optimizer: str = opt("adamw", "adamw (torch) or adamw8bit (bitsandbytes, CUDA; the reference's choice, saves "
                         "~0.2 GB here).", choices=OPTIMIZERS)

    # distillation (the reference: reverse KL at temperature 3 over all 76 attention outputs, t = 1)
    loss: str = opt("rkl", "rkl = KL(student||teacher) of channel softmaxes of standardised attention outputs (the "
                    "reference); kl = KL(teacher||student); js = Jensen-Shannon; mse = squared error of the "
                    "standardised outputs.", choices=LOSSES)
    temperature: float = opt(3.0, "Softmax temperature of rkl/kl/js.")
    image_side_only: bool = opt(False, "Distil image-token outputs only (MLLM and T5 text positions do not "
                                "correspond; method.md).")
    term_weights: dict[str, float] = opt(
        help="Per-kind weights, e.g. 'double_text=0.5,single_text=0'; kinds: double_image, double_text, "
             "single_image, single_text (default 1 each).",
        factory=lambda: {k: 1.0 for k in TERM_KINDS}, metavar="KIND=W,...", parse=parse_term_weights)
    timesteps: str = opt("one", "one = sigma 1, pure noise (the reference); uniform = U(0,1]; shifted = U(0,1] "
                         "shifted as FLUX samples at this resolution.", choices=TIMESTEP_MODES)
    # for t < 1: what x_t is built from (there are no images)
    intermediate_latents: str = opt(
        "noise", "For sigma < 1 (there are no images): noise = the pure noise itself; teacher = (1-sigma)*x0 + "
        "sigma*noise with x0 the teacher's one-step estimate at sigma 1 (one extra no-grad pass).",
        choices=INTERMEDIATE_LATENTS)
    # x each layer's RMS (sampling.perturb_hidden_states)
    hidden_noise: float = opt(0.0, "Gaussian noise added to the encoder's hidden states, as a fraction of each "
                              "layer's RMS: penalises the AlignNet's sensitivity to directions English prompts "
                              "never use, which other languages and images may occupy (0 = off, as in the paper).")
    # Share of prompts replaced by "" so the AlignNet also learns the teacher's empty-prompt conditioning:
    # what true classifier-free guidance (--true-cfg at generation) uses as its negative.
    empty_prompt_prob: float = opt(0.0, "Share of prompts replaced by the empty prompt, so the AlignNet also learns "
                                   "the teacher's unconditional embedding (needed for --true-cfg at generation).")
    resolution: int = opt(1024, "Square image size of the noise latents.")
    guidance: float | None = opt(None, "Guidance value fed to the transformer in both passes (default: the "
                                 "backbone's, 3.5 for FLUX.1-dev).")
    teacher_max_length: int | None = opt(None, "T5 tokens of the teacher (default: the backbone's, 512 for "
                                         "FLUX.1-dev).")

    # AlignNet shape
    fusion: str = opt("conv", "Layer fusion of a new AlignNet: conv (paper), scale (InternVL-1B variant), last "
                      "(ablation).", choices=("conv", "scale", "last"))
    # leading hidden states (token embeddings first) a new AlignNet leaves out of its fusion
    skip_layers: int = opt(0, "Leave the first N hidden states out of a new AlignNet's fusion; 1 = drop the "
                           "token-embedding output, which is word identity with no context and so language-specific "
                           "(0 = the paper).")
    # conv fusion's kernel extent along the sequence; None: 5, the paper's 5x5
    token_kernel: int | None = opt(None, "Extent along the sequence of a new conv AlignNet's kernel (default 5, the "
                                   "paper's 5x5); 1 mixes layers and hidden dims but not neighbouring tokens, so word "
                                   "order matters less.")
    context_layers: int = opt(0, "Bidirectional self-attention layers after a new AlignNet's fusion (0 = the paper): "
                              "a causal MLLM's word cannot see the words after it, while T5 is bidirectional.")
    # the reference averages padding too; masked is the fix (method.md)
    masked_pool: bool = opt(True, "Pooled embedding averages real tokens only, or padding too (the reference's "
                            "behaviour).", negation="unmasked-pool")

    # machinery (the rest comes from TrainingConfig)
    shuffle_buffer: int = opt(10000, "Prompts in the shuffle buffer.")
    mixed_precision: str = opt("auto", "Autocast of the AlignNet: auto = bf16 on CUDA, none on CPU. Frozen models "
                               "use --dtype.", choices=MIXED_PRECISION)  # the reference trained in bf16
    gradient_checkpointing: bool = opt(True, "Recompute transformer blocks in the backward pass (needed for 1024 px "
                                       "on one GPU).", negation="no-gradient-checkpointing")
    teacher_cache: str | None = opt(None, "Train from a --precompute-teacher folder: T5 and CLIP are never loaded.",
                                    metavar="DIR")  # precomputed teacher embeddings instead of T5/CLIP

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

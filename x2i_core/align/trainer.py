"""The alignment loop: attention distillation of an AlignNet through ONE frozen transformer.

Each micro-step draws noise latents and a timestep from counters (see sampling.py), runs the
transformer twice on the same latents and timestep: a teacher pass without grad, conditioned by the
backbone's own text encoders (or a cache of them), then a student pass conditioned by
encoder -> AlignNet, with grad flowing through the frozen transformer into the AlignNet only. Hooks
capture every attention output of both passes and losses.py compares them.

Scaling out: accelerate wraps only the AlignNet (DDP by default; FSDP/DeepSpeed settings pass through
from `accelerate config`), each process keeps its own frozen copy of the transformer, encoder and
teacher, and the learning-rate schedule counts optimizer updates, independent of the process count.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from ..errors import InputError
from ..outputs import save_pretrained
from ..prompt import MultimodalPrompt
from ..training.loop import StepLoss, TrainingTask, TrainResult, run_training
from ..training.optim import cosine_with_warmup, make_optimizer  # noqa: F401  (their first home; benchmarks import them)
from .components import (
    ARCHITECTURE, adopt_init_architecture, build_alignnet, check_training_memory, load_backbone, load_encoder,
    load_init, load_teacher, recorded_models,
)
from .config import AlignConfig
from .data import PromptStream
from .hooks import captured_attention
from .losses import DistillationLoss, distillation_loss
from .sampling import intermediate_latents, perturb_hidden_states, sample_timesteps, step_generator

RECORD_FILE = "x2i_align.json"


def text_prompts(texts: Sequence[str]) -> list[MultimodalPrompt]:
    """Captions as prompts: the encoder applies its one template, the same as at generation."""
    return [MultimodalPrompt.from_text(t) for t in texts]


def drop_prompts(texts: Sequence[str], cfg: AlignConfig, step: int, micro: int, rank: int) -> list[str]:
    """Each prompt replaced by "" with probability cfg.empty_prompt_prob; a pure function of (seed, step, micro,
    rank), so a resumed run drops exactly the same prompts."""
    if not cfg.empty_prompt_prob:
        return list(texts)
    rng = random.Random(f"{cfg.seed}-{step}-{micro}-{rank}")
    return ["" if rng.random() < cfg.empty_prompt_prob else t for t in texts]


def capture_sides(cfg: AlignConfig) -> tuple[str, ...]:
    """Which sides to capture: both, or only the image side when text-side terms weigh nothing."""
    weights = cfg.weights()
    return ("image",) if weights["double_text"] == 0 and weights["single_text"] == 0 else ("image", "text")


def distill_step(
    texts: Sequence[str],
    *,
    encoder,
    alignnet,
    backbone,
    teacher,
    cfg: AlignConfig,
    step: int,
    micro: int = 0,
    rank: int = 0,
    guidance: float,
    teacher_backbone=None,
) -> DistillationLoss:
    """One micro-batch: teacher pass (no grad), student pass (grad to the AlignNet only), the loss.

    `teacher_backbone` (default: the same backbone) exists for the naive two-copy baseline of the benchmark.
    """
    teacher_backbone = teacher_backbone or backbone
    height = width = cfg.resolution
    sides = capture_sides(cfg)
    with torch.no_grad():
        encoded = encoder.encode(text_prompts(texts))
        teacher_cond = teacher.encode_text(list(texts))
    generator = step_generator(cfg.seed, step, micro, rank)  # CPU: identical draws on every device
    noise = backbone.noise_latents(len(texts), height, width, generator)
    sigma = sample_timesteps(cfg.timesteps, len(texts), generator, image_seq_len=noise.shape[1])
    with torch.no_grad():
        clean = None
        if cfg.intermediate_latents == "teacher" and bool((sigma < 1).any()):
            velocity = teacher_backbone.predict(noise, torch.ones_like(sigma), teacher_cond, height=height, width=width,
                                                guidance_scale=guidance)
            clean = noise - velocity.to(noise.dtype)
        latents = intermediate_latents(noise, sigma, clean)
        with captured_attention(teacher_backbone.attention_points(), teacher_cond.prompt_embeds.shape[1], sides) as t_out:
            teacher_backbone.predict(latents, sigma, teacher_cond, height=height, width=width, guidance_scale=guidance)
    hidden_states = encoded.hidden_states
    if cfg.hidden_noise > 0:
        noise_generator = step_generator(cfg.seed + 1, step, micro, rank)  # not this step's noise/timestep stream
        hidden_states = perturb_hidden_states(hidden_states, encoded.attention_mask, cfg.hidden_noise, noise_generator)
    student_cond = alignnet(hidden_states, encoded.attention_mask)
    with captured_attention(backbone.attention_points(), student_cond.prompt_embeds.shape[1], sides) as s_out:
        backbone.predict(latents, sigma, student_cond, height=height, width=width, guidance_scale=guidance)
    return distillation_loss(
        s_out, t_out, loss=cfg.loss, temperature=cfg.temperature, weights=cfg.weights(),
        student_mask=student_cond.attention_mask, teacher_mask=teacher_cond.attention_mask,
    )


class AlignTask(TrainingTask):
    """Alignment as a training.loop task: the AlignNet is the trained module, prompts the data."""

    label = "align"
    weights_dir = "alignnet"

    def __init__(self, cfg: AlignConfig):
        self.cfg = cfg

    def prepare(self, accelerator) -> None:
        self.models = recorded_models(self.cfg)  # an unknown name fails here, before anything loads
        self.is_main = accelerator.is_main_process
        self.accelerator = accelerator

    def stream(self, rank: int, world: int):
        cfg = self.cfg
        self.rank, self.world = rank, world
        self.prompts = PromptStream.from_specs(cfg.data, text_key=cfg.text_key, seed=cfg.seed,
                                               buffer_size=cfg.shuffle_buffer, rank=rank, world_size=world)
        self.init = load_init(cfg)
        self.cfg, overridden = adopt_init_architecture(cfg, self.init)
        if overridden and self.is_main:
            print(f"The AlignNet's architecture comes from --init: {', '.join(overridden)}")
        self.data_files = [str(Path(f).expanduser().resolve()) for f in self.prompts.files]
        return self.prompts

    def check_resume(self, state: dict, accelerator) -> list[str]:
        return _check_resume_settings(state, self.cfg, self.world, accelerator, models=self.models,
                                      data_files=self.data_files)

    def build(self, device):
        cfg = self.cfg
        self.encoder = load_encoder(cfg, device)
        self.backbone = load_backbone(cfg, device)
        self.teacher = load_teacher(cfg, self.backbone)
        self.guidance = float(self.backbone.default_guidance if cfg.guidance is None else cfg.guidance)
        if cfg.gradient_checkpointing:
            self.backbone.transformer.enable_gradient_checkpointing()
        check_training_memory(cfg, self.backbone, device)
        return build_alignnet(cfg, self.encoder, self.backbone, self.init, self.models).to(device)

    def check_loaded(self, state: dict, is_main: bool) -> list[str]:
        return _check_resume_identity(state, self.encoder, self.backbone, is_main)

    def step(self, model, batch, step: int, micro: int, rank: int) -> StepLoss:
        texts = drop_prompts(batch, self.cfg, step, micro, rank)
        result = distill_step(texts, encoder=self.encoder, alignnet=model, backbone=self.backbone,
                              teacher=self.teacher, cfg=self.cfg, step=step, micro=micro, rank=rank,
                              guidance=self.guidance)
        return StepLoss(result.total, result.terms, result.skipped)

    def state(self) -> dict:
        return {"config": self.cfg.to_dict(), "encoder_identity": self.encoder.identity,
                "backbone_identity": self.backbone.identity, "models": self.models, "data_files": self.data_files}

    def board_scalars(self, terms: dict[str, float]) -> dict[str, float]:
        return _kind_means(terms)

    def save_final(self, module, output: Path, summary: dict) -> None:
        cfg = self.cfg
        save_pretrained(module, output)  # safetensors writes 0600: follow the umask instead
        record = {
            "encoder": cfg.encoder, "encoder_path": cfg.encoder_path, "encoder_identity": self.encoder.identity,
            "backbone": cfg.backbone, "backbone_path": cfg.backbone_path, "backbone_identity": self.backbone.identity,
            # what `--aligner OUT` takes as its defaults (also in config.json): registered names, checkpoints used
            "models": self.models, "resolution": cfg.resolution,
            "steps": summary["steps"], "last_loss": summary["last_loss"], "skipped_steps": summary["skipped_steps"],
            "processes": summary["processes"], "config": cfg.to_dict(),
            # each resume: from which step and checkpoint, and the changed settings it warned of
            "resumes": summary["resumes"],
        }
        (output / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str))


def run_alignment(cfg: AlignConfig) -> TrainResult:
    """Train (or resume) an AlignNet as `cfg` says; see the module docstring. Returns how it ended."""
    cfg = replace(cfg, data=[cfg.data] if isinstance(cfg.data, str) else list(cfg.data))
    cfg.validate()
    return run_training(cfg, AlignTask(cfg))


def train_alignnet(config: AlignConfig) -> Path:
    """Python API: train as `config` says; returns the AlignNet folder (the checkpoint folder if interrupted)."""
    return run_alignment(config).path


def _kind_means(terms: dict[str, float]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for key, value in terms.items():
        sums.setdefault("loss/" + key.split("/", 1)[0], []).append(value)
    return {k: sum(v) / len(v) for k, v in sums.items()}


#: settings that define what the AlignNet is trained to match: a resume that changes one is refused
LOSS_SETTINGS = ("loss", "temperature")
#: settings that change the path, not the target: a resume that changes one warns and records it in x2i_align.json
TRAJECTORY_SETTINGS = ("batch_size", "grad_accum", "seed", "timesteps", "intermediate_latents", "resolution", "guidance",
                       "teacher_max_length", "lr", "warmup", "steps", "max_grad_norm", "weight_decay", "hidden_noise",
                       "empty_prompt_prob", "shuffle_buffer", "text_key")


def _options(settings: dict) -> str:
    return ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())


def _check_resume_settings(state: dict, cfg: AlignConfig, world: int, accelerator, *, models: dict | None = None,
                           data_files: list[str] | None = None) -> list[str]:
    """Refuse, in one line naming the setting, a resume that would make another run: the AlignNet's architecture,
    the encoder or backbone, the loss, its temperature or term weights. Warn (main process) about the settings
    that only change the path (data files, TRAJECTORY_SETTINGS, the process count) and return them for the record.
    """
    saved = state.get("config", {})
    # the AlignNet's architecture must match the checkpoint's weights: refuse in one line, not a state-dict dump
    shape = [k for k in ARCHITECTURE if k in saved and saved[k] != getattr(cfg, k)]
    if shape:
        raise InputError("cannot resume: the checkpoint's AlignNet was built with "
                         + _options({k: saved[k] for k in shape}) + "; pass the same options (given: "
                         + _options({k: getattr(cfg, k) for k in shape}) + ")")
    recorded, chosen = state.get("models") or {}, models or {}
    for kind in ("encoder", "backbone"):
        was = (recorded.get(kind), recorded.get(f"{kind}_checkpoint"))
        now = (chosen.get(kind), chosen.get(f"{kind}_checkpoint"))
        if was[0] and now[0] and was != now:
            raise InputError(f"cannot resume: the checkpoint was aligned with {kind} {was[0]} ({was[1]}), this run "
                             f"uses {now[0]} ({now[1]}); pass the checkpoint's --{kind}/--{kind}-path (a moved "
                             f"folder counts as another model)")
    loss = {k: saved[k] for k in LOSS_SETTINGS if k in saved and saved[k] != getattr(cfg, k)}
    if "term_weights" in saved:
        before = replace(cfg, term_weights=saved["term_weights"],
                         image_side_only=saved.get("image_side_only", cfg.image_side_only)).weights()
        if before != cfg.weights():
            loss["term_weights"] = ",".join(f"{k}={v:g}" for k, v in before.items())
    if loss:
        given = {k: (",".join(f"{n}={v:g}" for n, v in cfg.weights().items()) if k == "term_weights"
                     else getattr(cfg, k)) for k in loss}
        raise InputError(f"cannot resume: the checkpoint was trained with {_options(loss)}, this run asks for "
                         f"{_options(given)}; the loss defines what the AlignNet learns: pass the checkpoint's "
                         f"settings, or start a new run in another -o")
    changed = [f"--{k.replace('_', '-')} {saved[k]} -> {getattr(cfg, k)}"
               for k in TRAJECTORY_SETTINGS if k in saved and saved[k] != getattr(cfg, k)]
    before_files = state.get("data_files")
    if before_files is None and "data" in saved:  # checkpoints written before data_files was recorded
        before_files = [os.path.abspath(os.path.expanduser(p)) for p in saved["data"]]
        data_files = [os.path.abspath(os.path.expanduser(p)) for p in cfg.data]
    if before_files is not None and data_files is not None and before_files != data_files:
        changed.insert(0, f"--data: other prompt files than the checkpoint's ({len(before_files)} -> {len(data_files)} "
                          f"files), so its data position points into another stream")
    if state.get("world_size") not in (None, world):
        changed.append(f"processes {state['world_size']} -> {world}")
    if changed and accelerator.is_main_process:
        print(f"Warning: resuming with changed settings ({', '.join(map(str, changed))}); the run will not follow "
              f"the interrupted one exactly (recorded in {RECORD_FILE})")
    return [str(c) for c in changed]


def _check_resume_identity(state: dict, encoder, backbone, is_main: bool = True) -> list[str]:
    """Compare the loaded models' identities with the checkpoint's. Without a `models` record (checkpoints older
    than it) the identity is all there is: a difference refuses. With one, names and checkpoints already matched
    before loading, so a difference is the plugin's own spelling (a relative vs absolute folder): a warning,
    returned for the record; a model of other widths then fails to restore the AlignNet, in one line."""
    changed = []
    for kind, model in (("encoder", encoder), ("backbone", backbone)):
        saved = state.get(f"{kind}_identity")
        if not saved or saved == model.identity:
            continue
        if not state.get("models"):
            raise InputError(f"cannot resume: the checkpoint was aligned with {kind} {saved}, this run loaded "
                             f"{model.identity}; pass the checkpoint's --{kind}/--{kind}-path")
        changed.append(f"{kind} identity {saved} -> {model.identity}")
    if changed and is_main:
        print(f"Warning: resuming with {', '.join(changed)} (recorded in {RECORD_FILE})")
    return changed

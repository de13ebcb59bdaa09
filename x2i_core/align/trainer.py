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
import math
import os
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import InputError
from ..outputs import check_output_dir, check_output_file, save_pretrained
from ..prompt import MultimodalPrompt
from . import checkpoint as ckpt
from .accelerator import make_accelerator
from .components import (
    ARCHITECTURE, adopt_init_architecture, build_alignnet, check_training_memory, load_backbone, load_encoder,
    load_init, load_teacher, recorded_models,
)
from .config import AlignConfig
from .data import PromptStream
from .hooks import captured_attention
from .logs import CsvLog, TensorBoardLog
from .losses import DistillationLoss, distillation_loss
from .sampling import intermediate_latents, perturb_hidden_states, sample_timesteps, step_generator

RECORD_FILE = "x2i_align.json"


@dataclass
class TrainResult:
    """How a run ended: where the AlignNet (or, if interrupted, the last checkpoint) is."""

    output_dir: Path
    step: int
    interrupted: bool
    checkpoint: Path | None
    last_loss: float | None
    skipped_steps: int = 0
    alignnet: Any = field(default=None, repr=False)  # the trained module (unwrapped), for callers in-process
    rank: int = 0
    world_size: int = 1

    @property
    def path(self) -> Path:
        """The AlignNet folder, or the last checkpoint when the run was interrupted."""
        return self.checkpoint if self.interrupted and self.checkpoint else self.output_dir


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """LR factor after `step` updates: linear warm-up to 1 over `warmup` updates, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(cfg: AlignConfig, params):
    """AdamW (torch) or 8-bit AdamW (bitsandbytes, InputError if it is not installed)."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except Exception as exc:
            raise InputError(
                f"--optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes; CUDA only): {type(exc).__name__}"
            ) from None
        return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


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


class StopRequest:
    """SIGINT / SIGTERM set a flag the loop checks after each step (a second SIGINT interrupts at once)."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class _Progress:
    """A rich progress bar on the main process (a no-op elsewhere or when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("align"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[info]}"))
            self.task = self.bar.add_task("align", total=total, completed=start, info="")

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def update(self, step: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def run_alignment(cfg: AlignConfig) -> TrainResult:
    """Train (or resume) an AlignNet as `cfg` says; see the module docstring. Returns how it ended."""
    cfg = replace(cfg, data=[cfg.data] if isinstance(cfg.data, str) else list(cfg.data))
    cfg.validate()
    if cfg.optimizer == "adamw8bit":
        make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])  # fail before minutes of model loading
    from accelerate.utils import set_seed

    accelerator = make_accelerator(cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    # created only once inputs and models have loaded (no partial output), but checked now, before any loading
    output = check_output_dir(cfg.output_dir, "-o")
    if cfg.log_csv:
        check_output_file(cfg.log_csv, "--log-csv")
    models = recorded_models(cfg)  # an unknown name fails here, before anything loads
    set_seed(cfg.seed)

    stream = PromptStream.from_specs(cfg.data, text_key=cfg.text_key, seed=cfg.seed, buffer_size=cfg.shuffle_buffer,
                                     rank=rank, world_size=world)
    resume_from = ckpt.find_checkpoint(cfg.resume, output) if cfg.resume else None
    if resume_from is None and ckpt.list_checkpoints(output):
        raise InputError(f"{output} already holds checkpoints of an earlier run: add --resume to continue it, "
                         f"or choose another -o (or delete {ckpt.checkpoints_dir(output)})")
    device = accelerator.device
    init = load_init(cfg)
    cfg, overridden = adopt_init_architecture(cfg, init)
    if overridden and is_main:
        print(f"The AlignNet's architecture comes from --init: {', '.join(overridden)}")
    data_files = [str(Path(f).expanduser().resolve()) for f in stream.files]
    loaded, resumes = None, []
    if resume_from is not None:  # read and checked whole before the models load: a bad checkpoint costs nothing
        loaded = ckpt.load_checkpoint(resume_from, rank)
        notes = _check_resume_settings(loaded["state"], cfg, world, accelerator, models=models, data_files=data_files)
        resumes = [*loaded["state"].get("resumes", []),
                   {"step": int(loaded["state"]["step"]), "checkpoint": str(resume_from), "warnings": notes}]
    encoder = load_encoder(cfg, device)
    backbone = load_backbone(cfg, device)
    if loaded is not None:
        resumes[-1]["warnings"] += _check_resume_identity(loaded["state"], encoder, backbone, is_main)
    teacher = load_teacher(cfg, backbone)
    guidance = float(backbone.default_guidance if cfg.guidance is None else cfg.guidance)
    if cfg.gradient_checkpointing:
        backbone.transformer.enable_gradient_checkpointing()
    check_training_memory(cfg, backbone, device)

    alignnet = build_alignnet(cfg, encoder, backbone, init, models).to(device)
    alignnet.train()
    optimizer = make_optimizer(cfg, alignnet.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(cosine_with_warmup, warmup=cfg.warmup, total=cfg.steps))

    start_step, skipped_steps = 0, 0
    if loaded is not None:
        state = loaded["state"]
        ckpt.restore(resume_from, loaded, alignnet=alignnet, optimizer=optimizer, scheduler=scheduler)
        start_step, skipped_steps = int(state["step"]), int(state.get("skipped_steps", 0))
        stream.position = int(state["data_position"])

    model, optimizer = accelerator.prepare(alignnet, optimizer)
    if is_main:
        output.mkdir(parents=True, exist_ok=True)
    csv_log = CsvLog(cfg.log_csv or output / "train_log.csv", resume_step=start_step if resume_from else None) if is_main else None
    board = TensorBoardLog(output / "tensorboard") if (cfg.tensorboard and is_main) else None

    def save(step: int) -> Path:
        state = {
            "data_position": stream.position, "skipped_steps": skipped_steps, "world_size": world,
            "config": cfg.to_dict(), "encoder_identity": encoder.identity, "backbone_identity": backbone.identity,
            "models": models, "data_files": data_files, "resumes": resumes,
        }
        return ckpt.save_checkpoint(
            output, step, model=accelerator.unwrap_model(model), optimizer=optimizer, scheduler=scheduler,
            state=state, rank=rank, is_main=is_main, barrier=accelerator.wait_for_everyone, keep=cfg.keep_checkpoints,
        )

    batches = stream.batches(cfg.batch_size)
    step, last_loss, last_checkpoint, interrupted = start_step, None, None, False
    with StopRequest() as stop, _Progress(cfg.progress and is_main, cfg.steps, start_step) as bar:
        while step < cfg.steps:
            began = time.perf_counter()
            loss_sum, term_sums, skipped_terms = 0.0, {}, 0
            for micro in range(cfg.grad_accum):
                texts = drop_prompts(next(batches), cfg, step, micro, rank)
                sync = nullcontext() if micro == cfg.grad_accum - 1 else accelerator.no_sync(model)
                with sync:
                    result = distill_step(texts, encoder=encoder, alignnet=model, backbone=backbone, teacher=teacher,
                                          cfg=cfg, step=step, micro=micro, rank=rank, guidance=guidance)
                    accelerator.backward(result.total / cfg.grad_accum)
                loss_sum += float(result.total.detach()) / cfg.grad_accum
                skipped_terms += result.skipped
                for key, value in result.terms.items():
                    term_sums[key] = term_sums.get(key, 0.0) + value / cfg.grad_accum
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
            step_ok = math.isfinite(grad_norm)
            if step_ok:
                optimizer.step()
            else:  # identical on every rank: gradients were all-reduced before the norm
                skipped_steps += 1
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            # One collective per step: rank-mean of the logged numbers, and whether any rank was signalled.
            keys = list(term_sums)
            numbers = torch.tensor([loss_sum, float(skipped_terms), 1.0 if stop.signal else 0.0,
                                    *[term_sums[k] for k in keys]], dtype=torch.float64, device=device)
            if world > 1:
                numbers = accelerator.reduce(numbers, reduction="mean")
            numbers = numbers.tolist()
            last_loss = numbers[0]
            stop_now = numbers[2] > 0 or (cfg.stop_after is not None and step - start_step >= cfg.stop_after)
            if is_main:
                row = {"step": step, "loss": last_loss, "lr": lr, "grad_norm": grad_norm,
                       "skipped_terms": int(round(numbers[1] * world)), "skipped_step": int(not step_ok),
                       "seconds": round(time.perf_counter() - began, 4), **dict(zip(keys, numbers[3:]))}
                csv_log.write(row)
                if board is not None:
                    board.write(step, {"loss/total": last_loss, "lr": lr, "grad_norm": grad_norm,
                                       **_kind_means(dict(zip(keys, numbers[3:])))})
                bar.update(step, f"loss {last_loss:.4g} lr {lr:.2e}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or (stop_now and step < cfg.steps):
                last_checkpoint = save(step)
            if stop_now and step < cfg.steps:
                interrupted = True
                break

    if board is not None:
        board.close()
    if not interrupted and is_main:
        final = accelerator.unwrap_model(model)
        save_pretrained(final, output)  # safetensors writes 0600: follow the umask instead
        record = {
            "encoder": cfg.encoder, "encoder_path": cfg.encoder_path, "encoder_identity": encoder.identity,
            "backbone": cfg.backbone, "backbone_path": cfg.backbone_path, "backbone_identity": backbone.identity,
            # what `--aligner OUT` takes as its defaults (also in config.json): registered names, checkpoints used
            "models": models, "resolution": cfg.resolution,
            "steps": step, "last_loss": last_loss, "skipped_steps": skipped_steps, "processes": world,
            "config": cfg.to_dict(),
            "resumes": resumes,  # each resume: from which step and checkpoint, and the changed settings it warned of
        }
        (output / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(output, step, interrupted, last_checkpoint, last_loss, skipped_steps,
                       alignnet=accelerator.unwrap_model(model), rank=rank, world_size=world)


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

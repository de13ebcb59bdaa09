"""The training loop every trainer runs: `run_training(cfg, task)`.

How a trainer plugs in: write a TrainingTask subclass (its hooks below, called in this order) and a config that
subclasses TrainingConfig, then call run_training(cfg, task). The loop owns everything else: accelerate (one GPU
to many; DDP wraps only the trained module, FSDP/DeepSpeed settings pass through from `accelerate config`), the
optimiser and warm-up/cosine schedule (counting optimizer updates, independent of the process count), gradient
accumulation, clipping (a non-finite gradient norm skips the update on every rank), atomic checkpoints holding
the trained weights, optimizer, scheduler, data position and per-rank RNG, exact resume, SIGINT/SIGTERM (finish
the step, checkpoint, exit), CSV/TensorBoard logs and the progress bar.

  1. prepare(accelerator)          cheap checks and settings; nothing big loads yet
  2. stream(rank, world)           the data: an object with .position (int, settable) and .batches(batch_size)
                                   (an endless iterator); position restores on resume
  3. check_resume(state, accelerator) -> warnings   refuse (InputError) a checkpoint of another run; warn of
                                   changed settings (state["world_size"]: the process count it was saved with)
  4. build(device) -> module       load the frozen models; return the trained nn.Module (on `device`)
  5. check_loaded(state) -> warnings   after loading: compare what only loaded models know
  6. step(model, batch, step, micro, rank) -> StepLoss   one micro-batch; must draw its randomness from
                                   (seed, step, micro, rank) for exact resume (sampling.step_generator)
  7. state() -> dict               extra JSON for each checkpoint's state.json (say "config": cfg.to_dict())
  8. save_final(module, output, summary)   main process, after the last step: write the result

Checkpoints land in OUTPUT/checkpoints/step-NNNNNNNN/<task.weights_dir>/ (checkpoint.py).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..outputs import check_output_dir, check_output_file
from . import checkpoint as ckpt
from .accelerator import make_accelerator
from .config import TrainingConfig
from .logs import CsvLog, TensorBoardLog
from .optim import make_optimizer, make_scheduler
from .progress import Progress
from .signals import StopRequest


@dataclass
class StepLoss:
    """What a task's step returns: the loss to backpropagate, named terms for the logs (floats), and how many
    terms were skipped as non-finite."""

    total: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    skipped: int = 0


@dataclass
class TrainResult:
    """How a run ended: where the result (or, if interrupted, the last checkpoint) is."""

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
    def module(self):
        """The trained module (unwrapped)."""
        return self.alignnet

    @property
    def path(self) -> Path:
        """The output folder, or the last checkpoint when the run was interrupted."""
        return self.checkpoint if self.interrupted and self.checkpoint else self.output_dir


class TrainingTask:
    """A trainer's part of run_training; see the module docstring for the order of the hooks."""

    label = "train"  # progress bar label
    weights_dir = "weights"  # the trained module's folder inside each checkpoint

    def prepare(self, accelerator) -> None:
        """Cheap settings checks before anything loads."""

    def stream(self, rank: int, world: int):
        raise NotImplementedError

    def check_resume(self, state: dict, accelerator) -> list[str]:
        """Refuse (InputError) a checkpoint that belongs to another run; return warnings to record."""
        return []

    def build(self, device) -> torch.nn.Module:
        raise NotImplementedError

    def check_loaded(self, state: dict, is_main: bool) -> list[str]:
        """After the models load: more resume checks; return warnings to record."""
        return []

    def step(self, model, batch, step: int, micro: int, rank: int) -> StepLoss:
        raise NotImplementedError

    def state(self) -> dict:
        """Extra JSON for each checkpoint."""
        return {}

    def board_scalars(self, terms: dict[str, float]) -> dict[str, float]:
        """TensorBoard scalars from a step's terms (default: one per term)."""
        return {f"loss/{k}": v for k, v in terms.items()}

    def save_final(self, module, output: Path, summary: dict) -> None:
        """Write the trained result into `output` (main process only)."""
        raise NotImplementedError


def run_training(cfg: TrainingConfig, task: TrainingTask) -> TrainResult:
    """Train (or resume) `task` as `cfg` says; see the module docstring. Returns how it ended."""
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
    task.prepare(accelerator)
    set_seed(cfg.seed)
    stream = task.stream(rank, world)
    resume_from = ckpt.find_checkpoint(cfg.resume, output) if cfg.resume else None
    if resume_from is None and ckpt.list_checkpoints(output):
        raise InputError(f"{output} already holds checkpoints of an earlier run: add --resume to continue it, "
                         f"or choose another -o (or delete {ckpt.checkpoints_dir(output)})")
    device = accelerator.device
    loaded, resumes = None, []
    if resume_from is not None:  # read and checked whole before the models load: a bad checkpoint costs nothing
        loaded = ckpt.load_checkpoint(resume_from, rank, weights_dir=task.weights_dir)
        notes = task.check_resume(loaded["state"], accelerator)
        resumes = [*loaded["state"].get("resumes", []),
                   {"step": int(loaded["state"]["step"]), "checkpoint": str(resume_from), "warnings": notes}]
    module = task.build(device)
    if loaded is not None:
        resumes[-1]["warnings"] += task.check_loaded(loaded["state"], is_main)
    module.train()
    optimizer = make_optimizer(cfg, module.parameters())
    scheduler = make_scheduler(cfg, optimizer)

    start_step, skipped_steps = 0, 0
    if loaded is not None:
        state = loaded["state"]
        ckpt.restore(resume_from, loaded, alignnet=module, optimizer=optimizer, scheduler=scheduler)
        start_step, skipped_steps = int(state["step"]), int(state.get("skipped_steps", 0))
        stream.position = int(state["data_position"])

    model, optimizer = accelerator.prepare(module, optimizer)
    if is_main:
        output.mkdir(parents=True, exist_ok=True)
    csv_log = CsvLog(cfg.log_csv or output / "train_log.csv", resume_step=start_step if resume_from else None) if is_main else None
    board = TensorBoardLog(output / "tensorboard") if (cfg.tensorboard and is_main) else None

    def save(step: int) -> Path:
        state = {"data_position": stream.position, "skipped_steps": skipped_steps, "world_size": world,
                 **task.state(), "resumes": resumes}
        return ckpt.save_checkpoint(
            output, step, model=accelerator.unwrap_model(model), optimizer=optimizer, scheduler=scheduler,
            state=state, rank=rank, is_main=is_main, barrier=accelerator.wait_for_everyone, keep=cfg.keep_checkpoints,
            weights_dir=task.weights_dir,
        )

    batches = stream.batches(cfg.batch_size)
    step, last_loss, last_checkpoint, interrupted = start_step, None, None, False
    with StopRequest() as stop, Progress(cfg.progress and is_main, cfg.steps, start_step, task.label) as bar:
        while step < cfg.steps:
            began = time.perf_counter()
            loss_sum, term_sums, skipped_terms = 0.0, {}, 0
            for micro in range(cfg.grad_accum):
                batch = next(batches)
                sync = nullcontext() if micro == cfg.grad_accum - 1 else accelerator.no_sync(model)
                with sync:
                    result = task.step(model, batch, step, micro, rank)
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
                                       **task.board_scalars(dict(zip(keys, numbers[3:])))})
                bar.update(step, f"loss {last_loss:.4g} lr {lr:.2e}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or (stop_now and step < cfg.steps):
                last_checkpoint = save(step)
            if stop_now and step < cfg.steps:
                interrupted = True
                break

    if board is not None:
        board.close()
    if not interrupted and is_main:
        task.save_final(accelerator.unwrap_model(model), output,
                        {"steps": step, "last_loss": last_loss, "skipped_steps": skipped_steps, "processes": world,
                         "resumes": resumes})
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(output, step, interrupted, last_checkpoint, last_loss, skipped_steps,
                       alignnet=accelerator.unwrap_model(model), rank=rank, world_size=world)

"""Training checkpoints, written atomically and read back without unpickling arbitrary objects.

A checkpoint is a folder OUTPUT/checkpoints/step-00000500/ holding the trained module in a subfolder named by
the task (alignnet/ for `x2i align`, lora/ for train-lora: save_pretrained, safetensors), optimizer.pt and scheduler.pt (state dicts: tensors and plain numbers, read with
torch.load(weights_only=True)), rng-rank<R>.pt per process, and state.json (step, data position,
settings). Every process writes into a temporary folder; after a barrier the main process renames
it into place, so a kill at any moment leaves either the old checkpoint or the new one, never half.
Assumes OUTPUT is on a filesystem all processes share (the usual for one node or a cluster mount).
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from ..convert import load_weights_only
from ..errors import CheckpointError, first_line
from ..outputs import follow_umask, save_pretrained

STATE_FILE = "state.json"
PREFIX = "step-"


def checkpoints_dir(output_dir: str | Path) -> Path:
    """OUTPUT/checkpoints."""
    return Path(output_dir) / "checkpoints"


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, as tensors and plain values."""
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    model,
    optimizer,
    scheduler,
    state: dict[str, Any],
    rank: int = 0,
    is_main: bool = True,
    barrier: Callable[[], None] = lambda: None,
    keep: int = 2,
    weights_dir: str = "alignnet",
) -> Path:
    """Write checkpoint `step` atomically (all processes call this together); returns its folder."""
    root = checkpoints_dir(output_dir)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    if is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_weights(model, tmp / weights_dir)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2, default=str))
    barrier()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    barrier()
    if is_main:
        if final.exists():  # a rerun reached the same step: replace it
            old = root / f".old-{PREFIX}{step:08d}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        for stale in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final


def save_weights(model, folder: Path) -> None:
    """A diffusers/transformers model via save_pretrained; any other module as its trainable tensors in
    folder/WEIGHTS (a LoRA: only the adapter weights, not the frozen transformer). Both follow the umask."""
    if hasattr(model, "save_pretrained"):
        save_pretrained(model, folder)  # safetensors writes 0600: follow the umask instead
        return
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k in trainable}
    save_file(tensors, str(folder / WEIGHTS))
    follow_umask([folder / WEIGHTS])


def load_weights(model, tensors: dict) -> None:
    """The inverse of save_weights: every tensor of a save_pretrained model, or exactly the trainable ones."""
    if hasattr(model, "save_pretrained"):
        model.load_state_dict(tensors)
        return
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != trainable:
        raise KeyError(f"{len(set(tensors) - trainable)} unexpected and {len(trainable - set(tensors))} missing tensors")
    model.load_state_dict(tensors, strict=False)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (with state.json), oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def find_checkpoint(resume: str, output_dir: str | Path) -> Path:
    """'latest' -> the newest checkpoint under OUTPUT; otherwise the folder given. CheckpointError if none."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"--resume: no checkpoint under {checkpoints_dir(output_dir)}")
        return found[-1]
    path = Path(resume).expanduser()
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"--resume {path}: not a checkpoint folder (no {STATE_FILE})")
    return path


WEIGHTS = "diffusion_pytorch_model.safetensors"


def load_checkpoint(path: Path, rank: int = 0, weights_dir: str = "alignnet") -> dict[str, Any]:
    """state.json, the trained module's tensors (PATH/weights_dir/) and the optimizer / scheduler / this rank's RNG state dicts, all read and
    checked now (cheap next to the models), so a corrupt checkpoint is one CheckpointError line before anything
    big loads."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
        step, position = int(state["step"]), int(state["data_position"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / STATE_FILE}: unreadable or incomplete ({type(exc).__name__}: "
                              f"{first_line(exc)})") from None
    if step < 0 or position < 0 or not isinstance(state.get("config", {}), dict):
        raise CheckpointError(f"{path / STATE_FILE}: not a checkpoint state (step {step}, position {position})")
    from safetensors.torch import load_file

    weights = path / weights_dir / WEIGHTS
    try:
        # to the CPU: load_state_dict copies onto the module's device (safetensors rejects names like "cpu:0")
        alignnet = load_file(str(weights), device="cpu")
    except Exception as exc:  # missing, truncated or not safetensors
        raise CheckpointError(f"{weights}: unreadable ({type(exc).__name__}: {first_line(exc)})") from None
    rng_file = path / f"rng-rank{rank}.pt"
    return {
        "state": state,
        "alignnet": path / weights_dir,  # the key keeps its first name: callers read it
        "alignnet_state": alignnet,
        "weights_dir": weights_dir,
        "optimizer": load_weights_only(path / "optimizer.pt"),
        "scheduler": load_weights_only(path / "scheduler.pt"),
        "rng": load_weights_only(rng_file) if rng_file.is_file() else None,
    }


def restore(path: Path, loaded: dict[str, Any], *, alignnet, optimizer, scheduler) -> None:
    """Put a loaded checkpoint's states into the run's objects; a mismatch (another AlignNet, an edited file) is one
    CheckpointError line, not a state-dict dump."""
    for what, load in ((loaded.get("weights_dir", "alignnet"), lambda: load_weights(alignnet, loaded["alignnet_state"])),
                       ("optimizer.pt", lambda: optimizer.load_state_dict(loaded["optimizer"])),
                       ("scheduler.pt", lambda: scheduler.load_state_dict(loaded["scheduler"]))):
        try:
            load()
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path / what} does not fit this run ({type(exc).__name__}: "
                                  f"{first_line(exc)})") from None
    if loaded["rng"] is not None:
        try:
            set_rng_state(loaded["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: unusable RNG state ({type(exc).__name__}: {first_line(exc)})") from None

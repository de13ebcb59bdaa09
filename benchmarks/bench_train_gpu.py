"""GPU benchmark of the trainers at real sizes: step time and peak memory of `x2i align`, `x2i train-lora` and
`x2i train-lightcontrol`, each on ONE GPU with FLUX.1-dev + Qwen2.5-VL-7B (+ the T5-XXL/CLIP-L teacher for align).

All models are built from their published configurations with random weights (no hub access; the same world as
bench_align_gpu.py). Frozen models in bf16, the trained module under bf16 autocast, gradient checkpointing through
the transformer, AdamW, clip 1.0. train-lora and train-lightcontrol run their trainers' own task code (build +
step of x2i_core.lora_training.LoraTask / x2i_core.lightcontrol_train.LightControlTask) on random square images of
each size, with the models handed to the task instead of loaded by name. For each trainer and size: median step
time, peak GPU memory (torch.cuda.max_memory_allocated) and examples per second.

    python benchmarks/bench_train_gpu.py                                  # every trainer at 512 and 1024 px
    python benchmarks/bench_train_gpu.py --trainers train-lora --sizes 1024 --steps 5
    python benchmarks/bench_train_gpu.py --scale tiny                     # the same code path on CPU, tiny models
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _bench_align_common import build_align_world, make_train_step, timed  # noqa: E402
from bench_generate_gpu import full_scale, tiny_scale  # noqa: E402  (the published model configurations)

TRAINERS = ("align", "train-lora", "train-lightcontrol")


def write_edits(folder: Path, size: int, count: int = 4) -> str:
    """`count` random size x size (input, instruction, target) examples with a JSONL index."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        for role in ("in", "out"):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{role}{i}.png")
        lines.append(json.dumps({"inputs": [f"in{i}.png"], "instruction": "make the sky a deep orange sunset",
                                 "target": f"out{i}.png"}))
    (folder / "index.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder)


@contextmanager
def handed_models(world: dict):
    """The tasks' build() loads models by name: hand them the benchmark's random-weight ones instead."""
    import x2i_core.generate
    import x2i_core.plugins

    saved = x2i_core.plugins.load_component, x2i_core.generate.load_aligner
    x2i_core.plugins.load_component = lambda kind, *a, **k: world["encoder" if kind == "encoder" else "backbone"]
    x2i_core.generate.load_aligner = lambda *a, **k: world["alignnet"]
    try:
        yield
    finally:
        x2i_core.plugins.load_component, x2i_core.generate.load_aligner = saved


def task_step(name: str, world: dict, size: int, folder: Path, *, batch: int, gradient_checkpointing: bool,
              autocast_bf16: bool):
    """(step(i), cleanup) for train-lora or train-lightcontrol: the task's own build and step, AdamW + clip."""
    from x2i_core.training.edit_data import read_edit_folder
    from x2i_core.training.optim import make_optimizer

    data = write_edits(folder / f"{name}-{size}", size, count=max(2, batch))
    device = next(world["backbone"].transformer.parameters()).device
    common = dict(data=data, output_dir=str(folder / "out"), encoder="bench", backbone="bench", aligner="bench",
                  gradient_checkpointing=gradient_checkpointing, progress=False)
    if name == "train-lora":
        from x2i_core.lora_training import LoraTask
        from x2i_core.training.lora_config import LoraTrainConfig

        task = LoraTask(LoraTrainConfig(**common))
        task.examples, (task.width, task.height) = read_edit_folder(data)
    else:
        from x2i_core.lightcontrol_train import LightControlConfig, LightControlTask

        task = LightControlTask(LightControlConfig(**common))
        task.examples, task.size = read_edit_folder(data)
        task.is_main = True
    task.stream(0, 1)
    with handed_models(world):
        module = task.build(device)
    module.train()
    optimizer = make_optimizer(task.cfg, module.parameters())
    count = len(task.examples)

    def step(i: int) -> float:
        picks = [(i * batch + j) % count for j in range(batch)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            result = task.step(module, picks, i, 0, 0)
        result.total.backward()
        torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(result.total.detach())

    def cleanup():
        if name == "train-lora":  # the LoRA layers sit on the shared transformer: take them off again
            world["backbone"].transformer.delete_adapters(["default"])

    return step, cleanup


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["full", "tiny"], default="full",
                        help="full: real FLUX.1-dev / Qwen2.5-VL-7B / T5-XXL sizes on CUDA; tiny: a CPU smoke run")
    parser.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS), help="which trainers")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sides (default 512 1024; tiny 16 32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per size (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=1, help="examples per step")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.scale == "full":
        if not torch.cuda.is_available():
            print("Error: bench_train_gpu.py --scale full needs a CUDA GPU (about 60 GB free at 1024 px); "
                  "run it with --scale tiny to check the code path on CPU", file=sys.stderr)
            return 2
        device, dtype, sizes = torch.device("cuda"), torch.bfloat16, args.sizes or [512, 1024]
        scale = full_scale(max(sizes), 1)
    else:
        device, dtype, sizes = torch.device("cpu"), torch.float32, args.sizes or [16, 32]
        scale = tiny_scale(max(sizes), 1)
    world = build_align_world(scale, device, dtype)
    world["alignnet"].requires_grad_(False)  # frozen for train-lora / train-lightcontrol; align re-enables it
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    checkpointing, autocast = not args.no_gradient_checkpointing, device.type == "cuda"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for trainer in args.trainers:
            for size in sizes:
                cleanup = lambda: None  # noqa: E731
                if trainer == "align":
                    world["alignnet"].requires_grad_(True)
                    step = make_train_step(world, size, batch=args.batch, gradient_checkpointing=checkpointing,
                                           autocast_bf16=autocast)
                else:
                    world["alignnet"].requires_grad_(False)
                    step, cleanup = task_step(trainer, world, size, Path(tmp), batch=args.batch,
                                              gradient_checkpointing=checkpointing, autocast_bf16=autocast)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                times = timed(step, args.steps, sync)
                peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
                cleanup()
                median = statistics.median(times)
                rows.append({"trainer": trainer, "size": size, "step_s": median, "peak_gib": peak,
                             "examples_per_s": args.batch / median})
    print(f"{'trainer':<20} {'size':>9} {'step s':>9} {'peak GiB':>9} {'examples/s':>11}")
    for r in rows:
        print(f"{r['trainer']:<20} {r['size']:>4}x{r['size']:<4} {r['step_s']:>9.3f} {r['peak_gib']:>9.1f} "
              f"{r['examples_per_s']:>11.2f}")
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), dtype {dtype}, "
          f"batch {args.batch}, gradient checkpointing {'on' if checkpointing else 'off'}, {args.steps} timed steps")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

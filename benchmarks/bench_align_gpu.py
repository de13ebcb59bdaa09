"""GPU benchmark of `x2i align` at real sizes: FLUX.1-dev + Qwen2.5-VL-7B + the T5-XXL/CLIP-L teacher on ONE GPU.

All models are built from their published configurations with random weights (no hub access): FLUX.1-dev
19 double / 38 single blocks, width 3072, T5 slot 4096, CLIP slot 768; T5-XXL encoder (4096 wide, 24
layers) and CLIP-L (768) as the live teacher; Qwen2.5-VL-7B (28 layers x 3584 + vision tower); the AlignNet
(29 x 3584 -> 4096/768, float32, trainable). Frozen models in bf16, AlignNet under bf16 autocast, gradient
checkpointing through the transformer, AdamW, clip 1.0: the `x2i align` step. For each resolution: median
step time, peak GPU memory (torch.cuda.max_memory_allocated: weights + activations + optimizer state) and
prompts per second. Needs roughly 60 GB of GPU memory at 1024 px.

    python benchmarks/bench_align_gpu.py                     # 512 and 1024 px on CUDA
    python benchmarks/bench_align_gpu.py --sizes 1024 --steps 5
    python benchmarks/bench_align_gpu.py --scale tiny        # the same code path on CPU, tiny models
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _bench_align_common import build_align_world, make_train_step, timed  # noqa: E402
from bench_generate_gpu import full_scale, tiny_scale  # noqa: E402  (the published model configurations)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["full", "tiny"], default="full",
                        help="full: real FLUX.1-dev / Qwen2.5-VL-7B / T5-XXL sizes on CUDA; tiny: a CPU smoke run")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sides (default 512 1024; tiny 16 32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per size (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=1, help="prompts per step (the reference: 1 per GPU)")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    args = parser.parse_args(argv)
    if args.scale == "full":
        if not torch.cuda.is_available():
            print("Error: bench_align_gpu.py --scale full needs a CUDA GPU (about 60 GB free at 1024 px); "
                  "run it with --scale tiny to check the code path on CPU", file=sys.stderr)
            return 2
        device, dtype, sizes = torch.device("cuda"), torch.bfloat16, args.sizes or [512, 1024]
        scale = full_scale(max(sizes), 1)
    else:
        device, dtype, sizes = torch.device("cpu"), torch.float32, args.sizes or [16, 32]
        scale = tiny_scale(max(sizes), 1)
    world = build_align_world(scale, device, dtype)
    weights = sum(world["weights"].values())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for size in sizes:
        step = make_train_step(world, size, batch=args.batch, gradient_checkpointing=not args.no_gradient_checkpointing,
                               autocast_bf16=device.type == "cuda")
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times = timed(step, args.steps, sync)
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else float("nan")
        median = statistics.median(times)
        rows.append((f"{size}x{size}", f"{median:.3f}", f"{args.batch / median:.3f}",
                     f"{peak / 2**30:.1f}" if device.type == "cuda" else "n/a (CPU)"))
    unit, div = ("GiB", 2**30) if weights >= 2**30 else ("MiB", 2**20)
    gib = lambda n: f"{n / div:.2f}"  # noqa: E731
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"x2i align step on {where}, {args.scale} scale, batch {args.batch}, median of {args.steps}, "
                        f"gradient checkpointing {'off' if args.no_gradient_checkpointing else 'on'}")
    for col in ("resolution", "step time (s)", "prompts/s", "peak GPU memory (GiB)"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    Console(width=120).print(table)
    parts = ", ".join(f"{k} {gib(v)}" for k, v in world["weights"].items())
    print(f"weights ({unit}): {parts}; total {gib(weights)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

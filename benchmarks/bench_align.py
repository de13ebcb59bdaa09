"""CPU benchmark: one shared frozen transformer (x2i) vs the naive two-copy teacher/student layout.

Each layout runs in its own fresh process (so peak memory is its own): build a random-weight alignment
world at a small FLUX-shaped scale (about 40 M transformer parameters, 256 image + 64 text tokens), do
one untimed step, then time --steps full training updates. Reported per layout: the fastest step time
(the least disturbed on a shared machine) and peak resident memory, measured as the process's peak RSS (getrusage ru_maxrss) minus its RSS just before
the models were built (imports excluded). Both layouts do the same arithmetic; the shared one holds one
transformer instead of two. The table ends with the two-copy / shared ratios.

    python benchmarks/bench_align.py                # both layouts, table
    python benchmarks/bench_align.py --steps 5 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_layout(layout: str, steps: int, size: int, threads: int) -> dict:
    """In this process: build one layout, time it, return its numbers."""
    import torch

    torch.set_num_threads(threads)
    from _bench_align_common import build_align_world, make_train_step, small_scale, timed

    baseline = _rss_mib()
    world = build_align_world(small_scale(size), "cpu", torch.float32, two_copies=(layout == "two-copy"))
    step = make_train_step(world, size)
    times = timed(step, steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"layout": layout, "step_s": min(times), "median_s": statistics.median(times), "peak_mib": peak - baseline,
            "weights_mib": sum(world["weights"].values()) / 2**20,
            "transformer_mib": world["weights"]["transformer"] / 2**20, "times": times}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per layout (the fastest is "
                        "reported: the least disturbed by other processes on a shared machine)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (256 -> 256 image tokens)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--layout", choices=["shared", "two-copy"], help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.layout:
        print(json.dumps(run_layout(args.layout, args.steps, args.size, args.threads)))
        return 0
    results = {}
    for layout in ("shared", "two-copy"):
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--layout", layout, "--steps", str(args.steps),
                               "--size", str(args.size), "--threads", str(args.threads)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        results[layout] = json.loads(proc.stdout.strip().splitlines()[-1])
    shared, naive = results["shared"], results["two-copy"]
    rows = [
        ("transformer weights (MiB)", f"{shared['transformer_mib']:.1f}", f"{naive['transformer_mib']:.1f}"),
        ("all weights (MiB)", f"{shared['weights_mib']:.1f}", f"{naive['weights_mib']:.1f}"),
        ("peak RSS above pre-build baseline (MiB)", f"{shared['peak_mib']:.1f}", f"{naive['peak_mib']:.1f}"),
        ("fastest step time (s)", f"{shared['step_s']:.3f}", f"{naive['step_s']:.3f}"),
    ]
    ratios = [naive["transformer_mib"] / shared["transformer_mib"], naive["weights_mib"] / shared["weights_mib"],
              naive["peak_mib"] / shared["peak_mib"], naive["step_s"] / shared["step_s"]]
    title = (f"alignment step, CPU fp32, {args.size}x{args.size}, batch 1, {args.threads} thread(s), "
             f"fastest of {args.steps}: one shared transformer vs two copies")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("", "shared (x2i)", "two copies (naive)", "two-copy / shared"):
        table.add_column(col, justify="left" if not col else "right")
    for (name, a, b), ratio in zip(rows, ratios):
        table.add_row(name, a, b, f"{ratio:.2f}x")
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory levels at real sizes: FLUX.1-dev + a Qwen2.5-VL-7B-sized encoder, random weights, every `--memory` level.

For each level (high, balanced, low, lowest: x2i_core MEMORY_LEVELS, recipes in plugins/backbones/flux/memory.py)
a fresh x2i pipeline is built and run end to end (encode, AlignNet, 28 steps at 1024², VAE decode): seconds per
image, peak GPU memory (allocated, and reserved by the caching allocator), and the time ratio to `high` (all
resident, bf16). The baseline is the same FLUX.1-dev conditioned by its own T5-XXL + CLIP-L, all resident, bf16.
Targets (issue 17): one level within 24 GB at <= 1.3x the all-resident time, one within 16 GB, and x2i end to
end <= 0.92x the T5+CLIP baseline. All in one run; the table goes to docs/performance.md.

    python benchmarks/bench_memory_gpu.py                       # 1024x1024, 28 steps, on CUDA (~60 GB for high)
    python benchmarks/bench_memory_gpu.py --levels low,lowest   # some levels only
    python benchmarks/bench_memory_gpu.py --scale tiny          # the same code path on CPU, tiny models

Models are built directly on the GPU and each level's recipe moves them where it wants them (the CPU for the
offloading levels) before the peak counters are reset, so the peaks are those of generation, not of building.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel  # noqa: E402

from _bench_common import Scale, build, qwen_encoder, synchronizer, teacher_text_encoders, time_teacher, time_x2i  # noqa: E402
from bench_generate_gpu import full_scale, tiny_scale  # noqa: E402
from x2i_core.alignnet import AlignNet  # noqa: E402
from x2i_core.generate import X2IPipeline  # noqa: E402
from x2i_core.memory import MEMORY_LEVELS, MEMORY_SUMMARIES, place_encoder  # noqa: E402
from x2i_plugins.backbones.flux.backbone import FluxBackbone  # noqa: E402
from x2i_plugins.backbones.flux.tiny import flux_scheduler  # noqa: E402

GIB = 2**30
TARGETS = {"fits_24gb_fast": (24, 1.3), "fits_16gb": 16, "x2i_vs_t5clip": 0.92}


def shared_parts(scale: Scale, device, dtype, seed: int = 0):
    """A fresh random FLUX transformer and VAE (the same seed every time: identical weights per level)."""
    torch.manual_seed(seed)
    transformer = build(lambda: FluxTransformer2DModel(**scale.flux), device, dtype)
    vae = build(lambda: AutoencoderKL(**scale.vae), device, dtype)
    return transformer, vae


def x2i_at_level(scale: Scale, level: str, device, dtype) -> X2IPipeline:
    """Qwen2.5-VL encoder -> AlignNet -> FluxBackbone with `level`'s recipe applied (as `--memory LEVEL` does)."""
    transformer, vae = shared_parts(scale, device, dtype)
    encoder = qwen_encoder(scale, device, dtype)
    aligner = build(lambda: AlignNet(
        num_layers=encoder.num_layers, hidden_size=encoder.hidden_size,
        prompt_dim=scale.flux["joint_attention_dim"], pooled_dim=scale.flux["pooled_projection_dim"]), device, dtype)
    pipe = FluxPipeline(scheduler=flux_scheduler(), vae=vae, transformer=transformer,
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    backbone = FluxBackbone(pipe, source="random", device=torch.device(device), dtype=dtype,
                            max_sequence_length=scale.t5_length, memory=level)
    x2i = X2IPipeline(encoder, aligner, backbone, names={"encoder": "qwen2.5-vl (random)",
                                                         "backbone": "flux (random)", "aligner": "alignnet (random)"})
    x2i.encoder_device = place_encoder(encoder, level, device)
    return x2i


def t5clip_baseline(scale: Scale, device, dtype) -> FluxPipeline:
    """FLUX.1-dev with its own T5 + CLIP, everything resident (what X2I replaces)."""
    transformer, vae = shared_parts(scale, device, dtype)
    clip, clip_tok, t5, t5_tok = teacher_text_encoders(scale, device, dtype)
    teacher = FluxPipeline(scheduler=flux_scheduler(), vae=vae, transformer=transformer,
                           text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok)
    teacher.set_progress_bar_config(disable=True)
    return teacher


def measure(run, device, sync) -> dict[str, float | None]:
    """Seconds of `run()` (after a warm-up) and the peak GPU memory it reached (None on CPU)."""
    cuda = torch.device(device).type == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    run(warmup=True)  # kernels, allocator, lazy imports, the first offload hooks
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run(warmup=False)
    sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / GIB if cuda else None
    reserved = torch.cuda.max_memory_reserved() / GIB if cuda else None
    return {"seconds": seconds, "peak_gib": peak, "reserved_gib": reserved}


def release() -> None:
    """Return the memory of the models just deleted, before the next level is built."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure_level(scale: Scale, level: str, device, dtype, sync) -> dict:
    """Build a fresh pipeline at `level`, time it; its models are freed when this returns."""
    x2i = x2i_at_level(scale, level, device, dtype)
    return measure(lambda warmup: time_x2i(x2i, scale, sync, steps=1 if warmup else None), device, sync)


def measure_baseline(scale: Scale, device, dtype, sync) -> dict:
    """The T5+CLIP FluxPipeline, all resident, timed the same way."""
    teacher = t5clip_baseline(scale, device, dtype)
    return measure(lambda warmup: time_teacher(teacher, scale, sync, steps=1 if warmup else None), device, sync)


def run_levels(scale: Scale, levels, device, dtype) -> tuple[dict[str, dict], dict]:
    """{level: figures} for each level, then the T5+CLIP baseline's figures."""
    sync = synchronizer(device)
    results = {}
    for level in levels:
        results[level] = measure_level(scale, level, device, dtype, sync)
        release()
    baseline = measure_baseline(scale, device, dtype, sync)
    release()
    return results, baseline


def table_rows(results: dict[str, dict], baseline: dict) -> list[tuple[str, ...]]:
    """Rows: level, what it does, s/image, peak allocated, peak reserved, time vs high, time vs T5+CLIP."""
    gib = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    high = results.get("high", {}).get("seconds")
    rows = []
    for level, fig in results.items():
        vs_high = f"{fig['seconds'] / high:.2f}x" if high else "-"
        vs_base = f"{fig['seconds'] / baseline['seconds']:.2f}x"
        rows.append((level, MEMORY_SUMMARIES[level], f"{fig['seconds']:.3f}", gib(fig["peak_gib"]),
                     gib(fig["reserved_gib"]), vs_high, vs_base))
    rows.append(("T5+CLIP", "FLUX.1-dev with its own text encoders, all resident", f"{baseline['seconds']:.3f}",
                 gib(baseline["peak_gib"]), gib(baseline["reserved_gib"]), "-", "1.00x"))
    return rows


def verdicts(results: dict[str, dict], baseline: dict) -> list[str]:
    """The issue's three targets, each met or missed (needs GPU figures for the memory ones)."""
    lines = []
    high = results.get("high", {}).get("seconds")
    limit, slowdown = TARGETS["fits_24gb_fast"]
    fast = [lv for lv, f in results.items() if f["reserved_gib"] is not None and f["reserved_gib"] <= limit
            and high and f["seconds"] <= slowdown * high]
    small = [lv for lv, f in results.items() if f["reserved_gib"] is not None and f["reserved_gib"] <= TARGETS["fits_16gb"]]
    lines.append(f"within 24 GiB at <= {slowdown}x the all-resident time: {', '.join(fast) or 'none'}")
    lines.append(f"within 16 GiB: {', '.join(small) or 'none'}")
    if high:
        ratio = high / baseline["seconds"]
        verdict = "met" if ratio <= TARGETS["x2i_vs_t5clip"] else "missed"
        lines.append(f"x2i (high) / T5+CLIP end to end: {ratio:.2f}x (target <= {TARGETS['x2i_vs_t5clip']}: {verdict})")
    return lines


def print_report(title: str, rows, lines) -> None:
    """A plain-text table (copied into docs/performance.md by hand)."""
    head = ("level", "what it does", "s/image", "peak alloc GiB", "peak reserved GiB", "vs high", "vs T5+CLIP")
    print(title)
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for line in lines:
        print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["full", "tiny"], default="full",
                        help="full: FLUX.1-dev/Qwen2.5-VL-7B sizes on CUDA; tiny: a CPU smoke run")
    parser.add_argument("--levels", default=",".join(MEMORY_LEVELS), help="comma-separated levels to run")
    parser.add_argument("--size", type=int, default=None, help="image side (default 1024 full, 32 tiny)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 28 full, 2 tiny)")
    args = parser.parse_args(argv)
    levels = [lv.strip() for lv in args.levels.split(",") if lv.strip()]
    unknown = [lv for lv in levels if lv not in MEMORY_LEVELS]
    if unknown:
        print(f"Error: unknown level(s) {', '.join(unknown)}; use {', '.join(MEMORY_LEVELS)}", file=sys.stderr)
        return 2
    if args.scale == "full":
        if not torch.cuda.is_available():
            print("Error: bench_memory_gpu.py needs a CUDA GPU (about 60 GB free for the high level) for "
                  "--scale full; run it with --scale tiny to check the code path on CPU", file=sys.stderr)
            return 2
        device, dtype = torch.device("cuda"), torch.bfloat16
        scale = full_scale(args.size or 1024, args.steps or 28)
    else:
        device, dtype = torch.device("cpu"), torch.float32
        scale = tiny_scale(args.size or 32, args.steps or 2)
    results, baseline = run_levels(scale, levels, device, dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    title = (f"{where}, {str(dtype).replace('torch.', '')}, {scale.size}x{scale.size}, {scale.steps} steps, "
             f"random weights ({args.scale} scale), one timed run per level after a 1-step warm-up")
    print_report(title, table_rows(results, baseline), verdicts(results, baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU benchmark at real sizes: FLUX.1-dev + a Qwen2.5-VL-7B-sized encoder, random weights, bf16, CUDA.

Seconds per image split into encoder, AlignNet, transformer (denoising loop) and VAE decode, peak GPU
memory, and the same for FLUX.1-dev conditioned by its own T5-XXL + CLIP-L (sharing the transformer).
All models are built from their published configurations with random weights (no hub access needed):
FLUX.1-dev 19 double / 38 single blocks, width 3072; T5-XXL encoder 4096 wide; CLIP-L 768;
Qwen2.5-VL-7B 28 layers x 3584 (+ its 32-block vision tower). Needs ~55 GB of GPU memory.

    python benchmarks/bench_generate_gpu.py                 # 1024x1024, 28 steps, on CUDA
    python benchmarks/bench_generate_gpu.py --scale tiny    # the same code path on CPU, tiny models

Text is tokenized by small offline tokenizers: T5 and CLIP still see their real padded lengths
(512 and 77), while the Qwen token count differs a little from the real tokenizer's.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _bench_common import Scale, best_runs, build_world, print_table, synchronizer, text_lengths, time_teacher, time_x2i  # noqa: E402


def full_scale(size: int, steps: int) -> Scale:
    """Published configurations of FLUX.1-dev (transformer, VAE), T5-XXL, CLIP-L and Qwen2.5-VL-7B."""
    return Scale(
        flux=dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                  num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                  guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
        vae=dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, latent_channels=16, norm_num_groups=32, act_fn="silu", sample_size=1024,
                 scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        qwen_text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                       rms_norm_eps=1e-6,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        qwen_vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                         spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=3584, window_size=112,
                         fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
        t5=dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                relative_attention_max_distance=128),
        clip=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu"),
        size=size, steps=steps,
    )


def tiny_scale(size: int, steps: int) -> Scale:
    """The same structure, tiny: exercises this script's code path on a CPU."""
    return Scale(
        flux=dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
                  num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24, guidance_embeds=True,
                  axes_dims_rope=(4, 6, 6)),
        vae=dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                 latent_channels=4, norm_num_groups=4, sample_size=size, scaling_factor=0.3611,
                 shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        qwen_text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}),
        qwen_vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                         spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, window_size=112,
                         fullatt_block_indexes=[1], tokens_per_second=2),
        t5=dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, relative_attention_num_buckets=8,
                relative_attention_max_distance=32),
        clip=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                  max_position_embeddings=77, projection_dim=24),
        size=size, steps=steps,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["full", "tiny"], default="full",
                        help="full: real FLUX.1-dev/Qwen2.5-VL-7B sizes on CUDA; tiny: a CPU smoke run")
    parser.add_argument("--size", type=int, default=None, help="image side (default 1024 full, 32 tiny)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 28 full, 2 tiny)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per pipeline (fastest reported)")
    args = parser.parse_args(argv)
    if args.scale == "full":
        if not torch.cuda.is_available():
            print("Error: bench_generate_gpu.py needs a CUDA GPU (about 55 GB free) for --scale full; "
                  "run it with --scale tiny to check the code path on CPU", file=sys.stderr)
            return 2
        device, dtype = torch.device("cuda"), torch.bfloat16
        scale = full_scale(args.size or 1024, args.steps or 28)
    else:
        device, dtype = torch.device("cpu"), torch.float32
        scale = tiny_scale(args.size or 32, args.steps or 2)

    x2i, teacher, weights = build_world(scale, device, dtype)
    sync = synchronizer(device)
    time_x2i(x2i, scale, sync, steps=1)  # warm-up: kernels, allocator, lazy imports
    time_teacher(teacher, scale, sync, steps=1)

    peaks = {}

    def measured(name, fn):
        def run():
            if device.type == "cuda":
                sync()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            result = fn()
            if device.type == "cuda":
                peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated() - before)
            return result
        return run

    ours, theirs = best_runs([measured("x2i", lambda: time_x2i(x2i, scale, sync)),
                              measured("teacher", lambda: time_teacher(teacher, scale, sync))], args.repeats)
    ours_len, theirs_len = text_lengths(x2i, scale)
    gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
    shared = weights["transformer"] + weights["vae"]
    x2i_weights = shared + weights["qwen"] + weights["alignnet"]
    teacher_weights = shared + weights["t5"] + weights["clip"]
    extra = [
        ("text tokens seen by the transformer", str(ours_len), str(theirs_len)),
        ("weights: text side", gib(weights["qwen"] + weights["alignnet"]), gib(weights["t5"] + weights["clip"])),
        ("weights: transformer + VAE (shared)", gib(shared), gib(shared)),
        ("weights: whole pipeline", gib(x2i_weights), gib(teacher_weights)),
    ]
    if device.type == "cuda":
        extra += [
            ("peak GPU memory above weights (run)", gib(peaks["x2i"]), gib(peaks["teacher"])),
            ("peak GPU memory, pipeline alone (est.)", gib(x2i_weights + peaks["x2i"]),
             gib(teacher_weights + peaks["teacher"])),
        ]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print_table(f"{where}, {str(dtype).replace('torch.', '')}, {scale.size}x{scale.size}, {scale.steps} steps, "
                f"random weights ({args.scale} scale), best of {args.repeats}", ours, theirs, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())

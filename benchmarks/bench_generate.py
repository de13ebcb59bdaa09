"""CPU benchmark of one `x2i generate` image, phase by phase, against the same Flux with its own T5+CLIP.

Small random-weight models sized so each phase takes measurable time on a laptop CPU (a few seconds
in all). The ratio says where time goes; absolute figures say nothing about real FLUX (see
bench_generate_gpu.py for that).

    python benchmarks/bench_generate.py [--size 128] [--steps 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _bench_common import Scale, build_world, best_runs, print_table, synchronizer, text_lengths, time_teacher, time_x2i  # noqa: E402


def cpu_scale(size: int, steps: int) -> Scale:
    """Every model a few hundred thousand to a few million parameters; the same shapes as FLUX otherwise."""
    return Scale(
        flux=dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=4, attention_head_dim=32,
                  num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=48, guidance_embeds=True,
                  axes_dims_rope=(8, 12, 12)),
        vae=dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), layers_per_block=1,
                 latent_channels=4, norm_num_groups=8, sample_size=size, scaling_factor=0.3611,
                 shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        qwen_text=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}),
        qwen_vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                         spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=128, window_size=112,
                         fullatt_block_indexes=[1], tokens_per_second=2),
        t5=dict(d_model=64, d_kv=16, d_ff=256, num_layers=4, num_heads=4, feed_forward_proj="gated-gelu",
                relative_attention_num_buckets=32, relative_attention_max_distance=128),
        clip=dict(hidden_size=48, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4,
                  max_position_embeddings=77, projection_dim=48),
        size=size, steps=steps,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (multiple of 4)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per pipeline (fastest reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = cpu_scale(args.size, args.steps)
    x2i, teacher, weights = build_world(scale, "cpu", torch.float32)
    sync = synchronizer("cpu")
    time_x2i(x2i, scale, sync, steps=1)  # warm-up: first-call allocations and lazy imports
    time_teacher(teacher, scale, sync, steps=1)
    ours, theirs = best_runs(
        [lambda: time_x2i(x2i, scale, sync), lambda: time_teacher(teacher, scale, sync)], args.repeats)
    ours_len, theirs_len = text_lengths(x2i, scale)
    mb = lambda n: f"{n / 2**20:.1f} MB"  # noqa: E731
    print_table(
        f"CPU, fp32, {scale.size}x{scale.size}, {scale.steps} steps, {torch.get_num_threads()} threads, "
        f"best of {args.repeats}",
        ours, theirs,
        [("text tokens seen by the transformer", str(ours_len), str(theirs_len)),
         ("text-side weights", mb(weights["qwen"] + weights["alignnet"]), mb(weights["t5"] + weights["clip"])),
         ("shared transformer + VAE weights", mb(weights["transformer"] + weights["vae"]), "same")],
    )


if __name__ == "__main__":
    main()

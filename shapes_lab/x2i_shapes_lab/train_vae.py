"""Train the shapes world's small AutoencoderKL (64x64 RGB -> 16 x 16 x 16 latents, as many channels as FLUX's VAE) from scratch.

python -m x2i_shapes_lab.train_vae --out DIR [--steps N]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .data import scene_batch


def build_vae():
    """A small AutoencoderKL: 3 levels (scale factor 4), 16 latent channels and no quant convs (as FLUX's).

    4 latent channels (12x compression) blurred outlines; 16 (3x) keeps them. Trained on the training split
    only, it decoded held-out pairs (a purple square) as blobs, so it sees all pairs (images, never text).
    """
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), layers_per_block=1, latent_channels=16, norm_num_groups=8,
        sample_size=64, scaling_factor=1.0, shift_factor=0.0, mid_block_add_attention=False,
        use_quant_conv=False, use_post_quant_conv=False,
    )


def train(out: str, steps: int = 1500, batch: int = 32, lr: float = 2e-3, seed: int = 0, threads: int = 1,
          kl_weight: float = 1e-6, log=print) -> dict:
    """Train, set scaling/shift factors from latent statistics, save fp32 to `out`; returns stats."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0, c0 = time.time(), time.process_time()
    for step in range(steps):
        # all colour+shape pairs: the VAE reads no text; held-out pairs stay out of every text-conditioned model
        _, x = scene_batch(seed * 1_000_003 + step, batch, split="any")
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean() + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"vae step {step} loss {loss.item():.4f} wall {time.time() - t0:.0f}s")
    vae.eval()
    with torch.no_grad():
        _, x = scene_batch(10_000_019, 256)  # statistics on the world's own training scenes
        z = vae.encode(x).latent_dist.mode()
        shift, scale = z.mean().item(), 1.0 / z.std().item()
        rec = vae.decode(z).sample
        err = (rec - x).abs().mean().item()
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    vae.save_pretrained(out)
    stats = {"steps": steps, "batch": batch, "threads": threads, "cpu_s": time.process_time() - c0,
             "wall_s": time.time() - t0, "recon_l1": err, "shift_factor": shift, "scaling_factor": scale}
    Path(out, "train_stats.json").write_text(json.dumps(stats, indent=1))
    log(json.dumps(stats))
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    train(a.out, a.steps, a.batch, seed=a.seed, threads=a.threads)


if __name__ == "__main__":
    main()

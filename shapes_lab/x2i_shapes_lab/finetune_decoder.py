"""Sharpen the shapes VAE's decoder with its encoder frozen: the latent space (and so the teacher trained on
it) is unchanged, only the decoding of those latents improves. Run while the teacher trains.

python -m x2i_shapes_lab.finetune_decoder --vae DIR --out DIR [--steps N]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .data import scene_batch


def finetune(vae_dir: str, out: str, steps: int = 2000, batch: int = 16, lr: float = 1e-3, seed: int = 1,
             threads: int = 1, max_minutes: float = 1e9, log=print) -> dict:
    """Train decoder weights only (L1 + MSE on reconstructions of all pairs' scenes); save the whole VAE."""
    from diffusers import AutoencoderKL

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    vae.encoder.requires_grad_(False).eval()
    params = list(vae.decoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0, c0 = time.time(), time.process_time()
    step = 0
    for step in range(steps):
        _, x = scene_batch(seed * 2_000_003 + step, batch, split="any")
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        rec = vae.decode(z).sample
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            log(f"decoder step {step} loss {loss.item():.4f} wall {time.time() - t0:.0f}s")
        if step % 250 == 249 or (time.time() - t0) / 60 > max_minutes:
            vae.save_pretrained(out)
            if (time.time() - t0) / 60 > max_minutes:
                log(f"time budget reached at step {step}")
                break
    vae.save_pretrained(out)
    prev = json.loads(Path(vae_dir, "train_stats.json").read_text()) if Path(vae_dir, "train_stats.json").is_file() else {}
    stats = {"vae": prev, "decoder_finetune": {"steps": step + 1, "batch": batch, "threads": threads,
                                               "cpu_s": time.process_time() - c0, "wall_s": time.time() - t0}}
    stats["cpu_s"] = prev.get("cpu_s", 0) + stats["decoder_finetune"]["cpu_s"]
    stats["wall_s"] = prev.get("wall_s", 0) + stats["decoder_finetune"]["wall_s"]
    stats["steps"] = f"{prev.get('steps', '?')} + {step + 1} decoder-only"
    Path(out, "train_stats.json").write_text(json.dumps(stats, indent=1))
    log(json.dumps(stats))
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--vae", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--max-minutes", type=float, default=1e9)
    a = p.parse_args(argv)
    finetune(a.vae, a.out, a.steps, max_minutes=a.max_minutes)


if __name__ == "__main__":
    main()

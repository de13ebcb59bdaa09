"""Train the shapes world's teacher from scratch: FluxTransformer2DModel + T5EncoderModel + CLIPTextModel,
jointly, with the flow-matching loss on English captions (training split only), then save a diffusers
FluxPipeline folder (transformer/, vae/, scheduler/, text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/).

python -m x2i_shapes_lab.train_teacher --vae DIR --out DIR [--steps N]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import torch

from .data import captions_for, scene_batch
from .schedule import warmup_cosine
from .text import grammar_words, word_tokenizer

MAX_TOKENS = 24  # T5 max_sequence_length and CLIP model_max_length of the shapes teacher


def build_text_encoders(vocab_size: int):
    """Small T5 (prompt_embeds, width 64) and CLIP text model (pooled, width 64), random init."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    t5 = T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=3, decoder_start_token_id=0, feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=16, relative_attention_max_distance=32, dropout_rate=0.0,
    ))
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS, pad_token_id=0, bos_token_id=2, eos_token_id=3, projection_dim=64,
    ))
    return t5, clip


def build_transformer():
    """FluxTransformer2DModel: 4 heads x 32, 2 double + 2 single blocks, no guidance embedding (schnell-like)."""
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=32,
        num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=64, guidance_embeds=False,
        axes_dims_rope=(8, 12, 12),
    )


def encode_latents(vae, seed: int, n: int, chunk: int = 256):
    """Scenes, their VAE latents (mode, scaled and shifted as FluxPipeline expects, packed (N, 64, 64)) and which
    of the 64 latent tokens show part of a shape ((N, 64) bool)."""
    from diffusers import FluxPipeline

    all_scenes, lat, fg = [], [], []
    with torch.no_grad():
        for i in range(0, n, chunk):
            sc, x = scene_batch(seed + i, min(chunk, n - i))
            z = vae.encode(x).latent_dist.mode()
            z = (z - vae.config.shift_factor) * vae.config.scaling_factor
            b, c, h, w = z.shape
            lat.append(FluxPipeline._pack_latents(z, b, c, h, w))
            # Pixel (0, 0) is always background (shapes stay >= 2 px from the border).
            shape_px = ((x - x[:, :, :1, :1]).abs().sum(1, keepdim=True) > 0.05).float()
            fg.append(torch.nn.functional.max_pool2d(shape_px, 8).flatten(1) > 0)  # a token = 8x8 pixels
            all_scenes += sc
    return all_scenes, torch.cat(lat), torch.cat(fg)


def train(vae_dir: str, out: str, steps: int = 3000, batch: int = 64, lr: float = 1e-3, seed: int = 0,
          threads: int = 1, n_scenes: int = 30000, drop: float = 0.1, max_minutes: float = 1e9, init: str | None = None,
          t_sampling: str = "logit-normal", ema_decay: float = 0.999, foreground_weight: float = 1.0,
          log=print) -> dict:
    """Train the teacher and save the pipeline folder; checkpoints every 500 steps. `init`: continue from a
    saved teacher folder (its transformer and text encoders; a fresh warm-up + cosine schedule).

    The cosine schedule runs on whichever ends first, `steps` or `max_minutes`, so a run stopped by its time
    budget has still decayed its learning rate. Saved weights are an exponential moving average of the
    trained ones (`ema_decay`; 0 turns it off): small flow models sample far cleaner from the average.
    `foreground_weight` > 1 weights the loss on latent tokens showing part of a shape that much more than on plain
    background: a shape covers ~4 of 64 tokens, and without it the background's irreducible noise-prediction
    error drowns the small signal that tells circle, square and triangle apart."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0, c0 = time.time(), time.process_time()
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    words = grammar_words(("en",), extra=("of", "with", "there", "is", "image", "picture"))
    tokenizer = word_tokenizer(words, model_max_length=MAX_TOKENS)
    t5, clip = build_text_encoders(len(tokenizer))
    transformer = build_transformer()
    if init:
        from diffusers import FluxTransformer2DModel
        from transformers import CLIPTextModel, T5EncoderModel

        transformer = FluxTransformer2DModel.from_pretrained(init, subfolder="transformer")
        t5 = T5EncoderModel.from_pretrained(init, subfolder="text_encoder_2")
        clip = CLIPTextModel.from_pretrained(init, subfolder="text_encoder")
        transformer.train(), t5.train(), clip.train()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
    scenes_, latents, foreground = encode_latents(vae, seed * 7919 + 1, n_scenes)
    log(f"encoded {len(scenes_)} scenes in {time.time() - t0:.0f}s; latents std {latents.std():.3f}")
    img_ids = FluxPipeline._prepare_latent_image_ids(batch, 8, 8, "cpu", torch.float32)
    txt_ids = torch.zeros(MAX_TOKENS, 3)
    params = list(transformer.parameters()) + list(t5.parameters()) + list(clip.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = 100
    ema = [p.detach().clone() for p in params] if ema_decay > 0 else None

    def lr_at(step: int) -> float:
        return lr * warmup_cosine(step, steps, (time.time() - t0) / 60, max_minutes, warm)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)

    def save(folder):
        if ema is not None:  # save the averaged weights, then put the trained ones back
            trained = [p.detach().clone() for p in params]
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in params], ema)
        pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=tokenizer,
                            text_encoder_2=t5, tokenizer_2=tokenizer, transformer=transformer)
        pipe.save_pretrained(folder)
        vae_stats = Path(vae_dir, "train_stats.json")  # save_pretrained drops it; keep how the VAE was made
        if vae_stats.is_file():
            shutil.copyfile(vae_stats, Path(folder, "vae", "train_stats.json"))
        if ema is not None:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in params], trained)

    step = 0
    for step in range(steps):
        idx = torch.randint(0, len(scenes_), (batch,), generator=gen)
        texts = captions_for([scenes_[i] for i in idx.tolist()], "en", rng.randrange(1 << 30))
        texts = ["" if rng.random() < drop else t for t in texts]
        ids = tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
        prompt = t5(ids)[0]
        pooled = clip(ids).pooler_output
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.sigmoid(torch.randn(batch, generator=gen))  # logit-normal timesteps, as SD3/Flux training
        if t_sampling == "mixed":  # half uniform: more weight near t = 1, where the layout (and the text) decides
            t = torch.where(torch.rand(batch, generator=gen) < 0.5, torch.rand(batch, generator=gen), t)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        pred = transformer(hidden_states=xt, timestep=t, guidance=None, pooled_projections=pooled,
                           encoder_hidden_states=prompt, txt_ids=txt_ids, img_ids=img_ids[0] if img_ids.dim() == 3 else img_ids,
                           return_dict=False)[0]
        weight = 1.0 + (foreground_weight - 1.0) * foreground[idx].float()  # (B, 64)
        loss = ((pred - (noise - x0)).pow(2).mean(-1) * weight).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - ema_decay)
        if step % 25 == 0:
            log(f"teacher step {step} loss {loss.item():.4f} wall {time.time() - t0:.0f}s")
        if step % 500 == 499:
            save(out)
        if (time.time() - t0) / 60 > max_minutes:
            log(f"time budget reached at step {step}")
            break
    save(out)
    prev = json.loads(Path(init, "train_stats.json").read_text()) if init and Path(init, "train_stats.json").is_file() else None
    stats = {"steps": step + 1, "batch": batch, "continued_from": prev, "t_sampling": t_sampling, "lr": lr, "ema_decay": ema_decay, "foreground_weight": foreground_weight, "threads": threads, "n_scenes": n_scenes, "caption_dropout": drop,
             "cpu_s": time.process_time() - c0, "wall_s": time.time() - t0, "final_loss": loss.item()}
    Path(out, "train_stats.json").write_text(json.dumps(stats, indent=1))
    log(json.dumps(stats))
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--vae", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-scenes", type=int, default=30000)
    p.add_argument("--max-minutes", type=float, default=1e9)
    p.add_argument("--init", default=None, help="continue from this teacher folder")
    p.add_argument("--t-sampling", default="logit-normal", choices=("logit-normal", "mixed"))
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--foreground-weight", type=float, default=1.0)
    a = p.parse_args(argv)
    train(a.vae, a.out, a.steps, a.batch, a.lr, a.seed, a.threads, a.n_scenes, max_minutes=a.max_minutes, init=a.init,
          t_sampling=a.t_sampling, ema_decay=a.ema_decay, foreground_weight=a.foreground_weight)


if __name__ == "__main__":
    main()

"""Shared pieces of the alignment benchmarks: a random-weight alignment world built from configs, one timed
training step, and the scales (tiny for CPU code-path checks, small for the CPU comparison, full on a GPU).

The world is what `x2i align` holds in memory: a Qwen2.5-VL encoder, a FluxBackbone (transformer + VAE),
the FLUX teacher (T5 + CLIP, live), and a trainable AlignNet. With `two_copies`, the teacher pass runs on
a second, deep-copied transformer: the reference's layout (one frozen FLUX per role).
"""
from __future__ import annotations

import copy
import time
from dataclasses import replace

import torch
from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel

from _bench_common import Scale, build, qwen_encoder, teacher_text_encoders
from x2i_core.align.config import AlignConfig
from x2i_core.align.trainer import distill_step
from x2i_core.alignnet import AlignNet
from x2i_plugins.backbones.flux.backbone import FluxBackbone
from x2i_plugins.backbones.flux.teacher import FluxTeacher
from x2i_plugins.backbones.flux.tiny import flux_scheduler

PROMPTS = [
    "a red fox sitting in fresh snow at the edge of a pine forest, morning light, highly detailed photograph",
    "ein kleines rotes Boot auf einem ruhigen See bei Sonnenuntergang, Aquarell",
    "一只橘色的猫躺在窗台上晒太阳，胶片摄影",
    "a futuristic city skyline at night with flying cars and neon signs, cinematic",
]


def small_scale(size: int = 256) -> Scale:
    """FLUX geometry (16 latent channels, VAE factor 8, 2x2 packing) at width 384, 4 double + 8 single blocks:
    about 40 M transformer parameters, enough for weights and activations both to matter on a CPU."""
    return Scale(
        flux=dict(patch_size=1, in_channels=64, num_layers=4, num_single_layers=8, attention_head_dim=64,
                  num_attention_heads=6, joint_attention_dim=256, pooled_projection_dim=128, guidance_embeds=True,
                  axes_dims_rope=(8, 28, 28)),
        vae=dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                 latent_channels=16, norm_num_groups=4, sample_size=size, scaling_factor=0.3611,
                 shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        qwen_text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}),
        qwen_vision=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                         spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=128, window_size=112,
                         fullatt_block_indexes=[0], tokens_per_second=2),
        t5=dict(d_model=256, d_kv=32, d_ff=512, num_layers=2, num_heads=8, relative_attention_num_buckets=32,
                relative_attention_max_distance=128),
        clip=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=77, projection_dim=128),
        size=size, steps=1, t5_length=64,
    )


def build_align_world(scale: Scale, device, dtype, *, two_copies: bool = False, seed: int = 0) -> dict:
    """{'encoder', 'backbone', 'teacher_backbone', 'teacher', 'alignnet', 'weights'} with random weights."""
    torch.manual_seed(seed)
    device = torch.device(device)
    transformer = build(lambda: FluxTransformer2DModel(**scale.flux), device, dtype)
    vae = build(lambda: AutoencoderKL(**scale.vae), device, dtype)
    clip, clip_tok, t5, t5_tok = teacher_text_encoders(scale, device, dtype)
    teacher = FluxTeacher(clip, clip_tok, t5, t5_tok, max_sequence_length=scale.t5_length)
    encoder = qwen_encoder(scale, device, dtype)

    def backbone_for(model):
        pipe = FluxPipeline(scheduler=flux_scheduler(), vae=vae, transformer=model,
                            text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
        return FluxBackbone(pipe, source="random", device=device, dtype=dtype, max_sequence_length=scale.t5_length)

    backbone = backbone_for(transformer)
    teacher_backbone = backbone_for(copy.deepcopy(transformer)) if two_copies else backbone
    alignnet = AlignNet(num_layers=encoder.num_layers, hidden_size=encoder.hidden_size,
                        prompt_dim=scale.flux["joint_attention_dim"],
                        pooled_dim=scale.flux["pooled_projection_dim"]).to(device).train()  # float32: it trains
    nbytes = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    weights = {"transformer": nbytes(transformer) * (2 if two_copies else 1), "qwen": nbytes(encoder.model),
               "t5+clip": nbytes(t5) + nbytes(clip), "alignnet": nbytes(alignnet), "vae": nbytes(vae)}
    return {"encoder": encoder, "backbone": backbone, "teacher_backbone": teacher_backbone, "teacher": teacher,
            "alignnet": alignnet, "weights": weights}


def make_train_step(world: dict, size: int, *, batch: int = 1, gradient_checkpointing: bool = False,
                    autocast_bf16: bool = False, loss: str = "rkl"):
    """A function step(i) doing one full update (teacher pass, student pass, backward, clip, AdamW) as `x2i align`."""
    cfg = replace(AlignConfig(), resolution=size, loss=loss, gradient_checkpointing=gradient_checkpointing)
    backbone = world["backbone"]
    for b in {id(backbone): backbone, id(world["teacher_backbone"]): world["teacher_backbone"]}.values():
        if gradient_checkpointing:
            b.transformer.enable_gradient_checkpointing()
    device = next(backbone.transformer.parameters()).device
    optimizer = torch.optim.AdamW(world["alignnet"].parameters(), lr=1e-4)

    def step(i: int) -> float:
        texts = [PROMPTS[(i * batch + j) % len(PROMPTS)] for j in range(batch)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            result = distill_step(texts, encoder=world["encoder"], alignnet=world["alignnet"], backbone=backbone,
                                  teacher=world["teacher"], cfg=cfg, step=i, guidance=3.5,
                                  teacher_backbone=world["teacher_backbone"])
        result.total.backward()
        torch.nn.utils.clip_grad_norm_(world["alignnet"].parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(result.total.detach())

    return step


def timed(step, n: int, sync=lambda: None, warmup: int = 1) -> list[float]:
    """Seconds of each of n steps after `warmup` untimed ones."""
    for i in range(warmup):
        step(i)
    times = []
    for i in range(n):
        sync()
        start = time.perf_counter()
        step(warmup + i)
        sync()
        times.append(time.perf_counter() - start)
    return times

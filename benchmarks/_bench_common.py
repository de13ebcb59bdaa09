"""Shared pieces of the generation benchmarks: random-weight models from configs, phase timing, the table.

Both benchmarks compare, on ONE shared frozen Flux transformer + VAE:
  x2i      = Qwen2.5-VL encoder -> AlignNet -> FluxBackbone (X2IPipeline, the `x2i generate` path)
  teacher  = the FluxPipeline with its own T5 + CLIP text encoders (what X2I replaces)
All weights are random (no hub): timings and memory are real, images are noise.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, Qwen2_5_VLConfig, Qwen2_5_VLModel, T5Config, T5EncoderModel
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from x2i_core.alignnet import AlignNet
from x2i_core.generate import X2IPipeline
from x2i_plugins.backbones.flux.backbone import FluxBackbone
from x2i_plugins.backbones.flux.tiny import flux_scheduler, tiny_clip_tokenizer, tiny_t5_tokenizer
from x2i_plugins.encoders.qwen25vl.encoder import Qwen25VLEncoder
from x2i_plugins.encoders.qwen25vl.tiny import CHAT_TEMPLATE, PAD_TOKEN, SPECIAL_TOKENS, build_tiny_tokenizer

PROMPT = ("a red fox sitting in fresh snow at the edge of a pine forest, morning light, "
          "soft shadows, highly detailed photograph")


@dataclass
class Scale:
    """Sizes of every model in one benchmark run."""

    flux: dict  # FluxTransformer2DModel kwargs
    vae: dict  # AutoencoderKL kwargs
    qwen_text: dict  # Qwen2.5-VL text_config sizes
    qwen_vision: dict  # Qwen2.5-VL vision_config sizes
    t5: dict  # T5Config sizes (d_model must equal flux joint_attention_dim)
    clip: dict  # CLIPTextConfig sizes (hidden_size must equal flux pooled_projection_dim)
    size: int  # image side in pixels
    steps: int
    t5_length: int = 512


def qwen_encoder(scale: Scale, device, dtype) -> Qwen25VLEncoder:
    """A Qwen2.5-VL encoder with random weights of the given sizes and the tiny tokenizer (offline)."""
    tokenizer = build_tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (PAD_TOKEN, *SPECIAL_TOKENS)}
    text = dict(scale.qwen_text)
    text.setdefault("vocab_size", -(-len(tokenizer) // 64) * 64)
    text.update(bos_token_id=ids[PAD_TOKEN], eos_token_id=ids["<|im_end|>"], pad_token_id=ids[PAD_TOKEN])
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(scale.qwen_vision),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    model = build(lambda: Qwen2_5_VLModel(config), device, dtype)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=28 * 28 * 1280, patch_size=14, temporal_patch_size=2, merge_size=2)
    return Qwen25VLEncoder(model, tokenizer, image_processor, CHAT_TEMPLATE, pretrained="random")


def build(make: Callable[[], torch.nn.Module], device, dtype) -> torch.nn.Module:
    """Construct a module directly on `device` in `dtype` (no fp32 CPU copy of a 12B model first)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            module = make()
    finally:
        torch.set_default_dtype(previous)
    return module.eval().requires_grad_(False)


def teacher_text_encoders(scale: Scale, device, dtype):
    """FLUX's own conditioning with random weights: (CLIP, its tokenizer, T5, its tokenizer)."""
    clip_tok, t5_tok = tiny_clip_tokenizer(), tiny_t5_tokenizer(scale.t5_length)
    clip_kw, t5_kw = dict(scale.clip), dict(scale.t5)
    # the real vocabularies where given (embedding memory counts), else the tiny tokenizers' own
    clip_kw["vocab_size"] = max(len(clip_tok), clip_kw.get("vocab_size", 0))
    t5_kw["vocab_size"] = max(len(t5_tok), t5_kw.get("vocab_size", 0))
    clip = build(lambda: CLIPTextModel(CLIPTextConfig(
        bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
        pad_token_id=clip_tok.pad_token_id, **clip_kw)), device, dtype)
    t5 = build(lambda: T5EncoderModel(T5Config(
        pad_token_id=t5_tok.pad_token_id, eos_token_id=t5_tok.eos_token_id, decoder_start_token_id=0,
        **t5_kw)), device, dtype)
    return clip, clip_tok, t5, t5_tok


def build_world(scale: Scale, device, dtype, seed: int = 0):
    """(X2IPipeline, teacher FluxPipeline) sharing one transformer and VAE; also parameter bytes per part."""
    torch.manual_seed(seed)
    transformer = build(lambda: FluxTransformer2DModel(**scale.flux), device, dtype)
    vae = build(lambda: AutoencoderKL(**scale.vae), device, dtype)
    clip, clip_tok, t5, t5_tok = teacher_text_encoders(scale, device, dtype)
    encoder = qwen_encoder(scale, device, dtype)
    aligner = build(lambda: AlignNet(
        num_layers=encoder.num_layers, hidden_size=encoder.hidden_size,
        prompt_dim=scale.flux["joint_attention_dim"], pooled_dim=scale.flux["pooled_projection_dim"]), device, dtype)

    backbone_pipe = FluxPipeline(scheduler=flux_scheduler(), vae=vae, transformer=transformer,
                                 text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    backbone = FluxBackbone(backbone_pipe, source="random", device=torch.device(device), dtype=dtype,
                            max_sequence_length=scale.t5_length)
    x2i = X2IPipeline(encoder, aligner, backbone, names={"encoder": "qwen2.5-vl (random)",
                                                         "backbone": "flux (random)", "aligner": "alignnet (random)"})
    teacher = FluxPipeline(scheduler=flux_scheduler(), vae=vae, transformer=transformer,
                           text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok)
    teacher.set_progress_bar_config(disable=True)
    nbytes = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    weights = {"transformer": nbytes(transformer), "vae": nbytes(vae), "qwen": nbytes(encoder.model),
               "alignnet": nbytes(aligner), "t5": nbytes(t5), "clip": nbytes(clip)}
    return x2i, teacher, weights


def synchronizer(device) -> Callable[[], None]:
    """A function that waits for queued GPU work, so wall-clock marks mean what they say."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def time_x2i(x2i: X2IPipeline, scale: Scale, sync, steps: int | None = None) -> dict[str, float]:
    """Seconds per phase of one X2IPipeline call (encode, align, denoise, decode, total)."""
    marks: list[tuple[str, float]] = []

    def on_phase(name):
        sync()
        marks.append((name, time.perf_counter()))

    sync()
    start = time.perf_counter()
    x2i(PROMPT, steps=steps or scale.steps, seed=0, width=scale.size, height=scale.size, on_phase=on_phase)
    sync()
    end = time.perf_counter()
    times = dict(marks)
    return {
        "encoder": times["align"] - times["encode"],
        "alignnet": times["denoise"] - times["align"],
        "transformer": times["decode"] - times["denoise"],
        "vae": end - times["decode"],
        "total": end - start,
    }


def time_teacher(teacher: FluxPipeline, scale: Scale, sync, steps: int | None = None) -> dict[str, float]:
    """Seconds per phase of one FluxPipeline(prompt=...) call with T5+CLIP (encode, denoise, decode, total)."""
    steps = steps or scale.steps
    marks: dict[str, float] = {}

    def first_forward(module, args, kwargs):
        if "denoise" not in marks:
            sync()
            marks["denoise"] = time.perf_counter()

    def step_end(pipe, i, t, tensors):
        if i == steps - 1:
            sync()
            marks["decode"] = time.perf_counter()
        return {}

    hook = teacher.transformer.register_forward_pre_hook(first_forward, with_kwargs=True)
    try:
        sync()
        start = time.perf_counter()
        teacher(prompt=PROMPT, height=scale.size, width=scale.size, num_inference_steps=steps, guidance_scale=3.5,
                max_sequence_length=scale.t5_length, generator=torch.Generator("cpu").manual_seed(0),
                callback_on_step_end=step_end)
        sync()
        end = time.perf_counter()
    finally:
        hook.remove()
    return {
        "encoder": marks["denoise"] - start, "alignnet": 0.0,
        "transformer": marks["decode"] - marks["denoise"], "vae": end - marks["decode"], "total": end - start,
    }


def best_runs(fns: list[Callable[[], dict[str, float]]], repeats: int) -> list[dict[str, float]]:
    """For each pipeline, the phases of its fastest run out of `repeats`.

    The fastest run is the one least disturbed by other processes (CPU machines here are shared);
    its phases are reported together so they add up to its total. Pipelines take turns in each round.
    """
    runs: list[list[dict[str, float]]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, runs):
            out.append(fn())
    return [min(rs, key=lambda r: r["total"]) for rs in runs]


def text_lengths(x2i: X2IPipeline, scale: Scale) -> tuple[int, int]:
    """Text tokens the transformer attends to: x2i (encoder tokens) vs teacher (T5 padded length)."""
    from x2i_core.prompt import MultimodalPrompt

    encoded = x2i.encoder.encode([MultimodalPrompt.from_text(PROMPT)])
    return int(encoded.attention_mask.shape[1]), scale.t5_length


def print_table(title: str, x2i: dict[str, float], teacher: dict[str, float], extra: list[tuple[str, str, str]] = ()):
    """A rich table (plain text when rich is missing): seconds per phase and the x2i / teacher ratio."""
    labels = [("encoder", "text encoder (Qwen2.5-VL | T5+CLIP)"), ("alignnet", "AlignNet"),
              ("transformer", "transformer (denoising loop)"), ("vae", "VAE decode"), ("total", "total per image")]
    rows = []
    for key, label in labels:
        ratio = f"{x2i[key] / teacher[key]:.2f}x" if teacher[key] > 0 else "-"
        rows.append((label, f"{x2i[key]:.3f}", f"{teacher[key]:.3f}" if teacher[key] > 0 else "-", ratio))
    rows += [(a, b, c, "") for a, b, c in extra]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for row in rows:
            print(f"  {row[0]:<40} {row[1]:>12} {row[2]:>12} {row[3]:>8}")
        return
    table = Table(title=title)
    for col, justify in (("phase", "left"), ("x2i [s]", "right"), ("teacher T5+CLIP [s]", "right"),
                         ("x2i / teacher", "right")):
        table.add_column(col, justify=justify)
    for row in rows:
        table.add_row(*row)
    Console(width=110).print(table)

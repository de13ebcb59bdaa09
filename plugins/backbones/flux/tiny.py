"""write_tiny_flux: a tiny but real diffusers Flux pipeline folder (random weights) for tests and benchmarks.

Widths: prompt_embeds 32 (T5 slot), pooled 24 (CLIP slot); VAE scale factor 2, so sizes must be
multiples of 4. Tokenizers are byte-level BPEs trained in-process (no download), so any text encodes.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

PROMPT_DIM = 32
POOLED_DIM = 24
_CORPUS = [
    "a red circle on a blue square", "a photo of a cat sitting on a green sofa", "two dogs playing in the snow",
    "a small yellow triangle next to a large purple star", "an astronaut riding a horse on the moon",
    "a bowl of fruit, oil painting, warm light", "the quick brown fox jumps over the lazy dog",
    "ein roter Kreis", "un cercle rouge", "一个红色的圆", "0123456789 , . ! ? ' \" - : ;",
]


def _bpe(special: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE trained on a few sentences: deterministic, covers every byte, so no text is unknown."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    return tok


def tiny_clip_tokenizer(max_length: int = 77) -> PreTrainedTokenizerFast:
    """CLIP-like: <|startoftext|> text <|endoftext|>, padded with <|endoftext|> (as FLUX's CLIP tokenizer)."""
    tok = _bpe(["<|startoftext|>", "<|endoftext|>"], 400)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=max_length,
    )


def tiny_t5_tokenizer(max_length: int = 512) -> PreTrainedTokenizerFast:
    """T5-like: text </s>, padded with <pad> (id 0)."""
    tok = _bpe(["<pad>", "</s>", "<unk>"], 400)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=max_length,
    )


def tiny_transformer(num_layers: int = 1, num_single_layers: int = 1) -> FluxTransformer2DModel:
    """The platform's verified tiny Flux transformer (width 32, prompt 32, pooled 24)."""
    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=num_layers, num_single_layers=num_single_layers,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=PROMPT_DIM,
        pooled_projection_dim=POOLED_DIM, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
    )


def tiny_vae() -> AutoencoderKL:
    """Two-level VAE (scale factor 2), 4 latent channels, FLUX-style scaling and shift."""
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
        sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False,
    )


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The FLUX.1-dev scheduler configuration (dynamic shifting by image sequence length)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
        base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
    )


def tiny_teacher(clip_tok: PreTrainedTokenizerFast, t5_tok: PreTrainedTokenizerFast) -> tuple[CLIPTextModel, T5EncoderModel]:
    """CLIP text model (hidden 24 = pooled width) and T5 encoder (d_model 32 = prompt width)."""
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tok), hidden_size=POOLED_DIM, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=POOLED_DIM,
        bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id, pad_token_id=clip_tok.pad_token_id,
    ))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tok), d_model=PROMPT_DIM, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32,
        pad_token_id=t5_tok.pad_token_id, eos_token_id=t5_tok.eos_token_id, decoder_start_token_id=0,
    ))
    return clip, t5


def write_tiny_flux(path, seed: int = 0, with_teacher: bool = True) -> str:
    """Write a tiny random-weight Flux pipeline folder (transformer, vae, scheduler [+ CLIP, T5]) and return its path."""
    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer, vae = tiny_transformer(), tiny_vae()
        parts = dict(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
        if with_teacher:
            clip_tok, t5_tok = tiny_clip_tokenizer(), tiny_t5_tokenizer()
            clip, t5 = tiny_teacher(clip_tok, t5_tok)
            parts = dict(text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok)
    pipe = FluxPipeline(scheduler=flux_scheduler(), vae=vae, transformer=transformer, **parts)
    pipe.save_pretrained(str(path))
    return str(path)

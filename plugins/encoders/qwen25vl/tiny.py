"""A tiny but real Qwen2.5-VL checkpoint folder for tests: random weights, the real file layout.

`write_tiny_qwen25vl(path)` writes what a hub snapshot holds (config.json + safetensors, a Qwen2
tokenizer with Qwen's special tokens and a chat template of the same shape, preprocessor_config.json),
so `Qwen25VLEncoder.from_pretrained(path)` runs the same loading code as for the real model.
Everything is built offline in about a second.
"""
from __future__ import annotations

import json
from pathlib import Path

# Qwen's control tokens, in the order they get ids after the byte-level vocabulary.
PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
)

# Same shape as Qwen2.5-VL-Instruct's template: a default system turn, then each message with one
# <|vision_start|><|image_pad|><|vision_end|> (or <|video_pad|>) per media part, in order.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# A few captions to learn some merges from, so text tokenizes into word pieces rather than bytes.
_CORPUS = (
    "a photo of a cat sitting on a wooden table next to a cup of coffee",
    "a red circle above a blue square on a white background",
    "an astronaut riding a horse on the moon, digital art, high quality",
    "a small dog running through green grass in the park at sunset",
    "a bowl of fruit with apples, oranges and bananas on a kitchen counter",
    "You are a helpful assistant. user assistant system",
)


def build_tiny_tokenizer():
    """A Qwen2Tokenizer over a byte-level BPE trained in-process, plus Qwen's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text, any language
        special_tokens=[PAD_TOKEN],
        show_progress=False,
    )
    bpe.train_from_iterator(list(_CORPUS) * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, model_max_length=32768)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


def tiny_config(tokenizer):
    """A Qwen2_5_VLConfig sized for CPU tests (see platform.md), with the tokenizer's special ids."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (PAD_TOKEN, *SPECIAL_TOKENS)}
    vocab_size = -(-len(tokenizer) // 64) * 64  # round up, as real checkpoints do
    text = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
        # mrope_section sums to head_dim / 2 = 8: temporal, height, width frequency bands
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids[PAD_TOKEN], eos_token_id=ids["<|im_end|>"], pad_token_id=ids[PAD_TOKEN],
    )
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
        temporal_patch_size=2, out_hidden_size=64, window_size=112, fullatt_block_indexes=[1],
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def write_tiny_qwen25vl(path, seed: int = 0) -> str:
    """Write a tiny random Qwen2.5-VL checkpoint folder (model, tokenizer, image processor); returns the path."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    config = tiny_config(tokenizer)
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # Qwen's hub defaults; the encoder caps max_pixels itself.
    Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=28 * 28 * 1280, patch_size=14, temporal_patch_size=2, merge_size=2,
    ).save_pretrained(path)
    return str(path)

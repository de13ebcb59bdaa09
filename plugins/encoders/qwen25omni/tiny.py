"""A tiny but real Qwen2.5-Omni checkpoint folder for tests: random weights, the real file layout.

`write_tiny_qwen25omni(path)` writes what a hub snapshot of Qwen/Qwen2.5-Omni-3B/-7B holds: a FULL model
(`model_type: qwen2_5_omni`: thinker + talker + token2wav) as config.json + safetensors, a Qwen2 tokenizer
with Omni's special tokens and a chat template of the real one's shape, and one preprocessor_config.json
holding both the image processor's and the WhisperFeatureExtractor's fields. `thinker_only=True` writes just
a thinker instead. Everything is built offline in a few seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

PAD_TOKEN = "<|endoftext|>"
# Omni's control tokens (the real vocabulary has them at 151644-151656, in this relative order).
SPECIAL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|vision_bos|>", "<|vision_eos|>", "<|IMAGE|>", "<|VIDEO|>",
)
# The names the real tokenizer_config gives them (Qwen's processor reads tokenizer.image_token etc.)
NAMED_TOKENS = (
    ("image_token", "<|IMAGE|>"), ("audio_token", "<|AUDIO|>"), ("video_token", "<|VIDEO|>"),
    ("vision_bos_token", "<|vision_bos|>"), ("vision_eos_token", "<|vision_eos|>"),
    ("audio_bos_token", "<|audio_bos|>"), ("audio_eos_token", "<|audio_eos|>"),
)

# Same shape as Qwen2.5-Omni's chat_template.json: a default system turn, then each message with one
# placeholder group per media part, in order (add_vision_id / add_audio_id number them as the real one does).
CHAT_TEMPLATE = (
    "{%- set audio_count = namespace(value=0) -%}{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] + '<|im_end|>\\n' }}"
    "{%- else -%}{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'image' or 'image' in content -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{ 'Picture ' + image_count.value|string + ': ' }}{%- endif -%}"
    "{{ '<|vision_bos|><|IMAGE|><|vision_eos|>' }}"
    "{%- elif content['type'] == 'audio' or 'audio' in content -%}"
    "{%- set audio_count.value = audio_count.value + 1 -%}"
    "{%- if add_audio_id -%}{{ 'Audio ' + audio_count.value|string + ': ' }}{%- endif -%}"
    "{{ '<|audio_bos|><|AUDIO|><|audio_eos|>' }}"
    "{%- elif content['type'] == 'video' or 'video' in content -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{ 'Video ' + video_count.value|string + ': ' }}{%- endif -%}"
    "{{ '<|vision_bos|><|VIDEO|><|vision_eos|>' }}"
    "{%- elif 'text' in content -%}{{ content['text'] }}"
    "{%- endif -%}{%- endfor -%}{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_CORPUS = (
    "a photo of a cat sitting on a wooden table next to a cup of coffee",
    "a red circle above a blue square on a white background",
    "a dog barking in the park while birds sing, the sound of rain on a roof",
    "an astronaut riding a horse on the moon, digital art, high quality",
    "You are a helpful assistant. user assistant system",
)


def build_tiny_tokenizer():
    """A Qwen2Tokenizer over a byte-level BPE trained in-process, plus Omni's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[PAD_TOKEN],
        show_progress=False,
    )
    bpe.train_from_iterator(list(_CORPUS) * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, model_max_length=32768,
                               model_specific_special_tokens=dict(NAMED_TOKENS))
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"  # as Qwen2.5-Omni's tokenizer_config; the encoder pads on the right itself
    return tokenizer


def tiny_thinker_config(tokenizer) -> dict:
    """A Qwen2_5OmniThinkerConfig as a dict, sized for CPU tests, with the tokenizer's special ids."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (PAD_TOKEN, *SPECIAL_TOKENS)}
    vocab_size = -(-len(tokenizer) // 64) * 64
    return dict(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            tie_word_embeddings=False, pad_token_id=ids[PAD_TOKEN], eos_token_id=ids["<|im_end|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=64, window_size=112, fullatt_block_indexes=[1],
        ),
        audio_config=dict(
            num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
            output_dim=64, max_source_positions=1500, n_window=100,
        ),
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"], video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"], audio_end_token_id=ids["<|audio_eos|>"],
        # not a declared field of the thinker config, but its forward reads it (platform.md); real configs carry it
        vision_start_token_id=ids["<|vision_bos|>"], vision_end_token_id=ids["<|vision_eos|>"],
        position_id_per_seconds=25, seconds_per_chunk=2, tie_word_embeddings=False,
    )


def tiny_full_config(tokenizer):
    """A Qwen2_5OmniConfig (thinker + a tiny talker + a tiny token2wav), as the real checkpoints are."""
    from transformers import Qwen2_5OmniConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    talker = dict(
        vocab_size=128, embedding_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        tts_codec_start_token_id=100, tts_codec_end_token_id=101, tts_codec_pad_token_id=102,
        tts_codec_mask_token_id=103, audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"], vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"], audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
    )
    token2wav = dict(
        dit_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, ff_mult=2, emb_dim=16,
            num_embeds=128, mel_dim=16, enc_emb_dim=8, enc_dim=16, enc_channels=[16, 16, 16, 16, 48],
            enc_attention_channels=8, enc_se_channels=8, look_ahead_layers=[1], look_backward_layers=[0],
        ),
        bigvgan_config=dict(
            mel_dim=16, upsample_initial_channel=32, resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3, 5]], upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
        ),
    )
    return Qwen2_5OmniConfig(thinker_config=tiny_thinker_config(tokenizer), talker_config=talker,
                             token2wav_config=token2wav)


def write_processor_config(path) -> None:
    """One preprocessor_config.json with the image processor's and the audio feature extractor's fields."""
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image = Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=28 * 28 * 1280, patch_size=14, temporal_patch_size=2, merge_size=2,
    ).to_dict()
    audio = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300,
                                    n_fft=400, padding_value=0.0, return_attention_mask=True).to_dict()
    merged = {**audio, **image, "processor_class": "Qwen2_5OmniProcessor",
              "feature_extractor_type": "WhisperFeatureExtractor"}
    merged.pop("mel_filters", None)  # the real file has no filter bank: it is recomputed on load
    Path(path, "preprocessor_config.json").write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")


def write_tiny_qwen25omni(path, seed: int = 0, thinker_only: bool = False) -> str:
    """Write a tiny random Qwen2.5-Omni checkpoint folder (full model unless thinker_only); returns the path."""
    import torch
    from transformers import (Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniThinkerConfig,
                              Qwen2_5OmniThinkerForConditionalGeneration)

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG
        torch.manual_seed(seed)
        if thinker_only:
            model = Qwen2_5OmniThinkerForConditionalGeneration(Qwen2_5OmniThinkerConfig(**tiny_thinker_config(tokenizer)))
        else:
            model = Qwen2_5OmniForConditionalGeneration(tiny_full_config(tokenizer))
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}), encoding="utf-8")
    write_processor_config(path)
    return str(path)

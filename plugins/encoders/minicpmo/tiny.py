"""A tiny but real MiniCPM-o-2.6 checkpoint folder for tests: random weights, the released file layout.

`write_tiny_minicpmo(path)` writes what the hub repository holds, in its shape: config.json (model_type
"minicpmo": Qwen2 fields at the top, `vision_config`, `audio_config`, `slice_config`, query_num ...; the
remote-code `auto_map` too, which x2i never follows), model.safetensors with the released key names
(`llm.`, `vpm.`, `resampler.`, `apm.`, `audio_projection_layer.`), a Qwen2 tokenizer with MiniCPM-o's special
tokens and its chat template in tokenizer_config.json, and preprocessor_config.json (image slicing and Whisper
feature settings in one file). Built offline, in seconds on CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

PAD_TOKEN = "<|endoftext|>"
# MiniCPM-o-2.6's added tokens that x2i relies on (and a few more of its markers), after the byte vocabulary
SPECIAL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<unk>", "<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>",
    "</quad>", "<point>", "</point>", "<slice>", "</slice>", "<image_id>", "</image_id>", "<unit>", "</unit>",
    "<|audio_start|>",
    "<|audio|>", "<|audio_end|>", "<|spk_bos|>", "<|spk|>", "<|spk_eos|>", "<|tts_bos|>", "<|tts_eos|>",
)
# The released template: string contents, a default system turn unless the dialogue brings one.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS = (
    "a photo of a cat sitting on a wooden table next to a cup of coffee",
    "a red circle above a blue square on a white background",
    "a small dog running through green grass in the park at sunset",
    "Text input Instruction editing description image input no",
    "You are a helpful assistant. user assistant system",
)
QUERY_NUM = 8


def build_tiny_tokenizer():
    """A Qwen2 fast tokenizer over a byte-level BPE trained in-process, plus MiniCPM-o's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[PAD_TOKEN], show_progress=False)
    bpe.train_from_iterator(list(_CORPUS) * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2TokenizerFast(vocab=model["vocab"], merges=merges, model_max_length=32768,
                                   pad_token=PAD_TOKEN, eos_token="<|im_end|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.unk_token = "<unk>"
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


def tiny_config(tokenizer) -> dict:
    """config.json of the released shape, sized for CPU tests."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (PAD_TOKEN, "<|im_end|>")}
    return {
        "architectures": ["MiniCPMO"], "model_type": "minicpmo",
        "auto_map": {"AutoConfig": "configuration_minicpm.MiniCPMOConfig", "AutoModel": "modeling_minicpmo.MiniCPMO",
                     "AutoModelForCausalLM": "modeling_minicpmo.MiniCPMO"},
        # the Qwen2 language model (the real one: 3584 wide, 28 layers, 28 heads, 4 kv heads)
        "vocab_size": -(-len(tokenizer) // 64) * 64, "hidden_size": 128, "intermediate_size": 256,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 2, "attention_dropout": 0.0,
        "bos_token_id": ids[PAD_TOKEN], "eos_token_id": ids["<|im_end|>"], "initializer_range": 0.02,
        "use_cache": True, "torch_dtype": "float32",
        # MiniCPM-o's own settings
        "query_num": QUERY_NUM, "image_size": 448, "drop_vision_last_layer": True, "batch_vision_input": True,
        "use_image_id": True, "vision_batch_size": 16, "audio_pool_step": 2, "audio_chunk_length": 1.0,
        "chunk_input": True, "stream_input": False, "init_vision": True, "init_audio": True, "init_tts": False,
        "slice_mode": True, "version": 2.6,
        "slice_config": {"max_slice_nums": 9, "patch_size": 14, "scale_resolution": 56, "model_type": "minicpmv"},
        "vision_config": {"hidden_size": 32, "image_size": 140, "intermediate_size": 64, "num_attention_heads": 2,
                          "num_hidden_layers": 3, "patch_size": 14, "model_type": "siglip_vision_model"},
        "audio_config": {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 128,
                         "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 64, "num_mel_bins": 80,
                         "max_source_positions": 1500, "max_target_positions": 64, "vocab_size": 51865,
                         "model_type": "whisper"},
    }


def preprocessor_config() -> dict:
    """preprocessor_config.json: MiniCPM-o's image processor fields and the Whisper feature extractor's."""
    return {
        "image_processor_type": "MiniCPMVImageProcessor", "processor_class": "MiniCPMOProcessor",
        "auto_map": {"AutoProcessor": "processing_minicpmo.MiniCPMOProcessor",
                     "AutoImageProcessor": "image_processing_minicpmv.MiniCPMVImageProcessor"},
        "max_slice_nums": 9, "scale_resolution": 56, "patch_size": 14, "use_image_id": True,
        "image_feature_size": QUERY_NUM, "im_start": "<image>", "im_end": "</image>", "slice_start": "<slice>",
        "slice_end": "</slice>", "unk": "<unk>", "im_id_start": "<image_id>", "im_id_end": "</image_id>",
        "slice_mode": True, "norm_mean": [0.5, 0.5, 0.5], "norm_std": [0.5, 0.5, 0.5], "version": 2.6,
        "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80, "sampling_rate": 16000,
        "hop_length": 160, "chunk_length": 30, "n_fft": 400, "padding_value": 0.0, "padding_side": "right",
        "return_attention_mask": False,
    }


def write_tokenizer(path: Path, tokenizer) -> None:
    """The tokenizer files, with tokenizer_config.json naming MiniCPM-o's own class and holding the template."""
    tokenizer.save_pretrained(path)
    config_path = path / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(tokenizer_class="MiniCPMOTokenizerFast", chat_template=CHAT_TEMPLATE,
                  auto_map={"AutoTokenizer": [None, "tokenization_minicpmo_fast.MiniCPMOTokenizerFast"]})
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    (path / "chat_template.jinja").unlink(missing_ok=True)  # the release keeps it in tokenizer_config.json


def write_tiny_minicpmo(path, seed: int = 0) -> str:
    """Write a tiny random MiniCPM-o-2.6 checkpoint folder; returns the path."""
    import torch
    from safetensors.torch import save_file

    from .checkpoint import read_parts
    from .modeling import MiniCPMOModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    write_tokenizer(path, tokenizer)
    (path / "config.json").write_text(json.dumps(tiny_config(tokenizer), indent=2), encoding="utf-8")
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2), encoding="utf-8")
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = MiniCPMOModel(read_parts(path))
        torch.nn.init.trunc_normal_(model.resampler.query, std=0.02)  # as MiniCPM initialises its queries
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "model.safetensors").chmod(0o644)
    return str(path)

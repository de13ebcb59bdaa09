"""Tiny but real InternVL checkpoint folders for tests: random weights, the real file layouts.

- `write_tiny_internvl(path)`: the native (`-hf`) layout that transformers' InternVL classes load
  (config.json model_type "internvl", safetensors, a Qwen2 tokenizer with InternVL's image tokens, a chat
  template of the -hf shape, preprocessor_config.json for the GotOcr2 image processor).
- `write_tiny_original_internvl(path)`: the layout of OpenGVLab's original releases (InternVL2.5-1B/4B):
  config.json model_type "internvl_chat" with llm_config + vision_config, keys `vision_model.*` with a fused
  attention `attn.qkv`, `mlp1.*`, `language_model.model.*`. Written from a native tiny model by renaming its
  keys back and fusing q/k/v, so both folders hold the same weights.
"""
from __future__ import annotations

import json
from pathlib import Path

from .convert import NATIVE_CHAT_TEMPLATE

PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>")
#: the attribute names the -hf tokenizers carry (InternVLProcessor reads them)
EXTRA_SPECIAL_TOKENS = {
    "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}

CHAT_TEMPLATE = NATIVE_CHAT_TEMPLATE  # the -hf checkpoints' shape, as the conversion writes it

_CORPUS = (
    "a photo of a cat sitting on a wooden table next to a cup of coffee",
    "a red circle above a blue square on a white background",
    "{'Text input': 'a dog', 'Instruction editing description': 'no', 'image input': 'no'}",
    "Frame1: Frame2: user assistant system",
)

TILE = 56  # pixels per tile side: 4x4 patches of 14 -> pixel shuffle 0.5 -> 4 tokens per tile


def build_tiny_tokenizer():
    """A Qwen2Tokenizer over a byte-level BPE trained in-process, plus InternVL's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[PAD_TOKEN], show_progress=False)
    bpe.train_from_iterator(list(_CORPUS) * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, model_max_length=8192,
                               extra_special_tokens=dict(EXTRA_SPECIAL_TOKENS))
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.pad_token = PAD_TOKEN
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(tokenizer, tied: bool = True):
    """An InternVLConfig sized for CPU tests: a 2-layer Qwen2 (width 64) and a 2-layer InternViT (width 32).

    `tied`: the lm_head shares the embeddings (as InternVL2.5-1B's Qwen2.5-0.5B does). A tied random model
    answers only blank lines (its last state is nearest its own input token); untied ones answer words."""
    from transformers import InternVLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (PAD_TOKEN, *SPECIAL_TOKENS)}
    text = dict(
        model_type="qwen2", vocab_size=-(-len(tokenizer) // 64) * 64, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rms_norm_eps=1e-6, tie_word_embeddings=tied,
        bos_token_id=ids[PAD_TOKEN], eos_token_id=ids["<|im_end|>"], pad_token_id=ids[PAD_TOKEN],
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=TILE,
        patch_size=14, attention_bias=True, use_qk_norm=False, norm_type="layer_norm", layer_norm_eps=1e-6,
        use_absolute_position_embeddings=True, use_mean_pooling=True,
    )
    return InternVLConfig(text_config=text, vision_config=vision, image_token_id=ids["<IMG_CONTEXT>"],
                          image_seq_length=(TILE // 14 // 2) ** 2, downsample_ratio=0.5, tie_word_embeddings=tied)


def _image_processor():
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    return GotOcr2ImageProcessorPil(size={"height": TILE, "width": TILE}, crop_to_patches=False, min_patches=1,
                                    max_patches=12, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def build_tiny_model(seed: int = 0, tied: bool = True):
    """(model, tokenizer): a seeded tiny InternVLForConditionalGeneration and its tokenizer."""
    import torch
    from transformers import InternVLForConditionalGeneration

    tokenizer = build_tiny_tokenizer()
    config = tiny_config(tokenizer, tied)
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config).eval()
        # random layer scales and position embeddings: zeros/constants would hide a mis-mapped key
        for name, param in model.named_parameters():
            if "lambda_" in name or "position_embeddings" in name or "cls_token" in name:
                param.data.normal_(0, 0.5)
    return model, tokenizer


def write_tiny_internvl(path, seed: int = 0, tied: bool = True) -> str:
    """Write a tiny random native InternVL folder (model, tokenizer, chat template, image processor)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny_model(seed, tied)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    _image_processor().save_pretrained(path)
    return str(path)


def write_tiny_original_internvl(path, seed: int = 0, tied: bool = True) -> str:
    """Write the same tiny model in the original InternVL2.5 layout (internvl_chat), as OpenGVLab releases it."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny_model(seed, tied)
    config = model.config
    vision, text = config.vision_config, config.text_config
    state = {}
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.contiguous().clone()
        if name.startswith("lm_head."):
            if not tied:
                state["language_model.lm_head.weight"] = tensor
            continue
        if name.startswith("model.language_model."):
            state["language_model.model." + name.removeprefix("model.language_model.")] = tensor
        elif name.startswith("model.multi_modal_projector."):
            index = {"layer_norm": "0", "linear_1": "1", "linear_2": "3"}
            part, rest = name.removeprefix("model.multi_modal_projector.").split(".", 1)
            state[f"mlp1.{index[part]}.{rest}"] = tensor
        elif ".attention.q_proj." in name or ".attention.k_proj." in name or ".attention.v_proj." in name:
            layer, proj, kind = name.rsplit(".", 2)
            layers.setdefault(f"{layer}|{kind}", {})[proj] = tensor
        else:
            state[_original_vision_key(name)] = tensor
    for key, parts in layers.items():
        layer, kind = key.split("|")
        fused = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
        state[_original_vision_key(f"{layer}.qkv.{kind}")] = fused
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    text_dict = text.to_dict()
    text_dict.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2")
    (path / "config.json").write_text(json.dumps({
        "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel"},
        "model_type": "internvl_chat", "template": "internvl2_5", "downsample_ratio": config.downsample_ratio,
        "select_layer": -1, "ps_version": "v2", "force_image_size": vision.image_size[0],
        "dynamic_image_size": True, "max_dynamic_patch": 12, "use_thumbnail": True, "torch_dtype": "float32",
        "llm_config": text_dict,
        "vision_config": {
            "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b",
            "hidden_size": vision.hidden_size, "intermediate_size": vision.intermediate_size,
            "num_hidden_layers": vision.num_hidden_layers, "num_attention_heads": vision.num_attention_heads,
            "image_size": vision.image_size[0], "patch_size": vision.patch_size[0], "num_channels": 3,
            "qkv_bias": vision.attention_bias, "qk_normalization": vision.use_qk_norm, "norm_type": "layer_norm",
            "layer_norm_eps": vision.layer_norm_eps, "hidden_act": vision.hidden_act, "drop_path_rate": 0.0,
            "attention_dropout": 0.0, "dropout": 0.0, "initializer_factor": 1.0, "use_flash_attn": False,
        },
    }, indent=2))
    # the original repositories ship a Qwen2 tokenizer with InternVL's tokens but no multimodal chat template
    tokenizer.chat_template = None
    tokenizer.save_pretrained(path)
    for stale in ("chat_template.jinja", "chat_template.json"):
        (path / stale).unlink(missing_ok=True)
    (path / "modeling_internvl_chat.py").write_text("raise RuntimeError('remote code must never run')\n")
    return str(path)


def _original_vision_key(native: str) -> str:
    """A native vision-tower key written back in InternViT's names (the inverse of the conversion's renames)."""
    key = native.replace("model.vision_tower.", "vision_model.").replace(".encoder.layer.", ".encoder.layers.")
    for new, old in ((".embeddings.cls_token", ".embeddings.class_embedding"),
                     (".embeddings.position_embeddings", ".embeddings.position_embedding"),
                     (".embeddings.patch_embeddings.projection.", ".embeddings.patch_embedding."),
                     (".lambda_1", ".ls1"), (".lambda_2", ".ls2"),
                     (".attention.projection_layer.", ".attn.proj."), (".attention.", ".attn."),
                     (".layernorm_before.", ".norm1."), (".layernorm_after.", ".norm2.")):
        key = key.replace(new, old)
    return key

"""Loading Qwen2.5-Omni's thinker and its preprocessing from a hub id or folder, with one-line errors.

A real checkpoint is the full model (`model_type: qwen2_5_omni`: thinker + talker + token2wav); the thinker
class loads its own weights from it and skips the rest. The talker's speaker file (spk_dict.pt, a pickle) is
never opened. preprocessor_config.json holds the image processor's and the WhisperFeatureExtractor's fields.
"""
from __future__ import annotations

from x2i_core import CheckpointError, check_loaded, find_chat_template, first_line, quiet_transformers

MODEL_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")


def load_parts(pretrained: str, *, device, dtype, attn_implementation: str, revision: str | None,
               required_tokens: tuple[str, ...], probe_token: str):
    """(thinker, tokenizer, image processor, feature extractor, chat template) from a checkpoint."""
    from transformers import (AutoConfig, AutoTokenizer, Qwen2_5OmniThinkerForConditionalGeneration,
                              WhisperFeatureExtractor)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    hub = {"revision": revision} if revision else {}
    try:
        config = AutoConfig.from_pretrained(pretrained, **hub)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load Qwen2.5-Omni from {pretrained}: {first_line(exc)}") from exc
    if config.model_type not in MODEL_TYPES:
        raise CheckpointError(
            f"{pretrained} holds a {config.model_type!r} model, not Qwen2.5-Omni (model_type 'qwen2_5_omni')"
        )
    thinker_config = config.thinker_config if config.model_type == "qwen2_5_omni" else config
    try:
        tokenizer = AutoTokenizer.from_pretrained(pretrained, **hub)
        # The PIL class explicitly: the default (torchvision) class is unavailable without torchvision.
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(pretrained, **hub)
        feature_extractor = WhisperFeatureExtractor.from_pretrained(pretrained, **hub)
    except Exception as exc:  # a missing or broken tokenizer / preprocessor file
        raise CheckpointError(f"cannot load Qwen2.5-Omni's preprocessing from {pretrained}: {first_line(exc)}") from exc
    vocab = tokenizer.get_vocab()
    absent = [t for t in required_tokens if t not in vocab]
    if absent:
        raise CheckpointError(f"{pretrained}'s tokenizer lacks Qwen2.5-Omni's special tokens ({', '.join(absent)})")
    if getattr(thinker_config, "vision_start_token_id", None) is None:
        # not a declared config field, yet the 3-D position code reads it: take it from the tokenizer
        thinker_config.vision_start_token_id = vocab["<|vision_bos|>"]
    try:
        with quiet_transformers():  # its load report lists the talker and token2wav we skip on purpose
            model, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
                pretrained, config=thinker_config, dtype=dtype, device_map=str(device),
                attn_implementation=attn_implementation, output_loading_info=True, **hub,
            )
    except Exception as exc:  # hub offline, corrupt safetensors ...
        raise CheckpointError(f"cannot load Qwen2.5-Omni from {pretrained}: {first_line(exc)}") from exc
    check_loaded(info, pretrained, "Qwen2.5-Omni thinker")
    chat_template = find_chat_template(pretrained, tokenizer, [probe_token], hub)
    return model, tokenizer, image_processor, feature_extractor, chat_template


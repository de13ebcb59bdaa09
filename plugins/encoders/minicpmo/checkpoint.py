"""Reading a released MiniCPM-o-2.6 checkpoint folder without its remote code: config.json into transformers'
own configs, preprocessor_config.json into plain settings, and the safetensors weights into MiniCPMOModel by name.

The released keys already carry the names MiniCPMOModel uses (`llm.model.*`, `llm.lm_head.weight`, `vpm.*`,
`resampler.*`, `apm.*`, `audio_projection_layer.*`); `tts.*` (speech output) is skipped. A missing or
mismatched weight is refused in one line: random weights would encode garbage without any error downstream.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from x2i_core import CheckpointError, first_line

MODEL_TYPE = "minicpmo"
#: prefixes of the parts x2i builds; every key under them must match, keys elsewhere (tts.) are skipped
BUILT_PREFIXES = ("llm.", "vpm.", "resampler.", "apm.", "audio_projection_layer.")
#: top-level config.json fields that are not the language model's (everything else is a Qwen2 field)
NOT_TEXT_FIELDS = {
    "vision_config", "audio_config", "tts_config", "slice_config", "auto_map", "architectures", "model_type",
    "query_num", "image_size", "drop_vision_last_layer", "batch_vision_input", "use_image_id", "vision_batch_size",
    "audio_pool_step", "audio_chunk_length", "stream_input", "init_vision", "init_audio", "init_tts", "slice_mode",
    "chunk_input", "version", "patch_size", "_name_or_path", "transformers_version",
}
#: MiniCPMOConfig's defaults (the SigLIP so400m NaViT tower) for a config.json without vision_config
DEFAULT_VISION = {"hidden_size": 1152, "image_size": 980, "intermediate_size": 4304, "num_attention_heads": 16,
                  "num_hidden_layers": 27, "patch_size": 14}
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors")


@dataclass
class MiniCPMOParts:
    """What config.json says about each part, as transformers configs plus MiniCPM's own settings."""

    text: Any  # Qwen2Config
    vision: Any  # Idefics2VisionConfig (layers after drop_vision_last_layer)
    audio: Any  # WhisperConfig
    query_num: int = 64
    audio_pool_step: int = 2
    audio_chunk_length: float = 1.0
    vision_batch_size: int = 16
    raw: dict = field(default_factory=dict, repr=False)


@dataclass
class ImageSettings:
    """preprocessor_config.json's image fields (MiniCPMVImageProcessor) and the Whisper feature settings."""

    max_slice_nums: int = 9
    scale_resolution: int = 448
    patch_size: int = 14
    image_feature_size: int = 64
    use_image_id: bool = True
    slice_mode: bool = True
    norm_mean: tuple = (0.5, 0.5, 0.5)
    norm_std: tuple = (0.5, 0.5, 0.5)
    audio: dict = field(default_factory=dict)


def resolve_folder(pretrained: str, revision: str | None = None) -> Path:
    """A local folder as is, else the hub snapshot (from the cache when offline)."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return path
    if path.exists() or pretrained.startswith((".", "/", "~")):
        raise CheckpointError(f"MiniCPM-o checkpoint folder not found: {pretrained}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(pretrained, revision=revision, ignore_patterns=["*.pt", "*.bin", "assets/*"]))
    except Exception as exc:  # offline without a cached copy, unknown repository ...
        raise CheckpointError(f"cannot load MiniCPM-o from {pretrained}: {first_line(exc)}") from exc


def _read_json(folder: Path, name: str) -> dict:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {name}: not a MiniCPM-o checkpoint folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {first_line(exc)}") from exc


def read_parts(folder: Path) -> MiniCPMOParts:
    """config.json as transformers configs; CheckpointError for another model type."""
    from transformers import Idefics2VisionConfig, Qwen2Config, WhisperConfig

    raw = _read_json(folder, "config.json")
    if raw.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{folder} holds a {raw.get('model_type')!r} model, not MiniCPM-o (model_type 'minicpmo')")
    version = str(raw.get("version", "2.6"))
    if not version.startswith("2.6"):  # MiniCPM-o 4.5 shares the model_type with other parts (Qwen3, ...)
        raise CheckpointError(f"{folder} is MiniCPM-o version {version}; this port reads MiniCPM-o-2.6 only")
    text = Qwen2Config(**{k: v for k, v in raw.items() if k not in NOT_TEXT_FIELDS})
    vision = {**DEFAULT_VISION, **(raw.get("vision_config") or {})}
    layers = int(vision["num_hidden_layers"]) - (1 if raw.get("drop_vision_last_layer", True) else 0)
    vision_config = Idefics2VisionConfig(
        hidden_size=vision["hidden_size"], intermediate_size=vision["intermediate_size"], num_hidden_layers=layers,
        num_attention_heads=vision["num_attention_heads"], num_channels=vision.get("num_channels", 3),
        image_size=vision["image_size"], patch_size=vision["patch_size"],
        hidden_act=vision.get("hidden_act", "gelu_pytorch_tanh"), layer_norm_eps=vision.get("layer_norm_eps", 1e-6),
        attention_dropout=0.0,
    )
    audio = {k: v for k, v in (raw.get("audio_config") or {}).items() if k not in ("model_type", "architectures")}
    return MiniCPMOParts(
        text=text, vision=vision_config, audio=WhisperConfig(**audio), query_num=int(raw.get("query_num", 64)),
        audio_pool_step=int(raw.get("audio_pool_step", 2)), audio_chunk_length=float(raw.get("audio_chunk_length", 1.0)),
        vision_batch_size=int(raw.get("vision_batch_size", 16)), raw=raw,
    )


def read_image_settings(folder: Path, parts: MiniCPMOParts) -> ImageSettings:
    """preprocessor_config.json; its slice and query settings must agree with config.json (as the original asserts)."""
    raw = _read_json(folder, "preprocessor_config.json")
    settings = ImageSettings(
        max_slice_nums=int(raw.get("max_slice_nums", 9)), scale_resolution=int(raw.get("scale_resolution", 448)),
        patch_size=int(raw.get("patch_size", 14)), image_feature_size=int(raw.get("image_feature_size", 64)),
        use_image_id=bool(raw.get("use_image_id", False)), slice_mode=bool(raw.get("slice_mode", True)),
        norm_mean=tuple(raw.get("norm_mean", (0.5, 0.5, 0.5))), norm_std=tuple(raw.get("norm_std", (0.5, 0.5, 0.5))),
        audio={k: raw[k] for k in ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft",
                                    "padding_value") if k in raw},
    )
    if settings.image_feature_size != parts.query_num or settings.patch_size != parts.vision.patch_size:
        raise CheckpointError(
            f"{folder}: preprocessor_config.json (image_feature_size {settings.image_feature_size}, patch_size "
            f"{settings.patch_size}) disagrees with config.json (query_num {parts.query_num}, "
            f"patch_size {parts.vision.patch_size})"
        )
    return settings


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder (sharded or single); CheckpointError if there are none."""
    index = folder / WEIGHT_FILES[0]
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot read {index}: {first_line(exc)}") from exc
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(f"{folder} lacks the weight shard {missing[0]} named in {index.name}")
        return [folder / n for n in names]
    single = folder / WEIGHT_FILES[1]
    if single.is_file():
        return [single]
    raise CheckpointError(f"{folder} has no MiniCPM-o weights (model.safetensors or model.safetensors.index.json)")


def load_weights(model, folder: Path, dtype, device="cpu") -> None:
    """Fill `model` (built on the meta device) from the folder's safetensors, by name, cast to `dtype` and placed
    on `device` tensor by tensor (no second copy of the model in host memory)."""
    from safetensors import safe_open

    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state, unexpected, mismatched = {}, [], []
    for path in weight_files(folder):
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    if not key.startswith(BUILT_PREFIXES):
                        continue  # tts.* and anything else x2i does not build
                    if key not in expected:
                        unexpected.append(key)
                        continue
                    tensor = f.get_tensor(key)
                    if tuple(tensor.shape) != expected[key]:
                        mismatched.append(f"{key} {tuple(tensor.shape)} vs {expected[key]}")
                        continue
                    state[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
        except CheckpointError:
            raise
        except Exception as exc:  # a truncated or corrupt safetensors file
            raise CheckpointError(f"cannot read MiniCPM-o weights {path}: {first_line(exc)}") from exc
    if "llm.lm_head.weight" not in state and getattr(model.parts.text, "tie_word_embeddings", False):
        if "llm.model.embed_tokens.weight" in state:
            state["llm.lm_head.weight"] = state["llm.model.embed_tokens.weight"]
    missing = sorted(set(expected) - set(state))
    if mismatched:
        raise CheckpointError(f"{folder}: {len(mismatched)} MiniCPM-o weights have other shapes (first: {mismatched[0]})")
    if missing:
        raise CheckpointError(f"{folder} lacks {len(missing)} MiniCPM-o weights (first: {missing[0]})")
    if unexpected:
        raise CheckpointError(
            f"{folder} has {len(unexpected)} weights its config.json does not describe (first: {unexpected[0]})"
        )
    model.load_state_dict(state, strict=True, assign=True)

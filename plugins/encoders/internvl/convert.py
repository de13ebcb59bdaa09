"""Original InternVL checkpoints (OpenGVLab's `internvl_chat` layout, e.g. InternVL2.5-1B/4B) -> the native
`-hf` layout that transformers' InternVL classes load, without running the checkpoint's remote code.

What changes (the mapping transformers' own conversion script documents):
- config: `llm_config` -> `text_config` (a plain Qwen2 config for InternVL2.5-1B/4B), `vision_config`
  (InternViT: `qkv_bias` -> `attention_bias`, `qk_normalization` -> `use_qk_norm`), `select_layer` ->
  `vision_feature_layer`, the image token id read from the tokenizer (`<IMG_CONTEXT>`);
- weights: `vision_model.*` -> `vision_tower.*` with InternViT's names renamed (class_embedding ->
  cls_token, ls1/ls2 -> lambda_1/lambda_2, norm1/norm2 -> layernorm_before/after, attn.proj ->
  attention.projection_layer, ...), the fused `attn.qkv` split into q_proj/k_proj/v_proj (equal thirds of
  the rows), `mlp1.{0,1,3}` -> `multi_modal_projector.{layer_norm,linear_1,linear_2}`; `language_model.*`
  stays (a Qwen2ForCausalLM in both layouts);
- files: the tokenizer is kept with a chat template of the -hf shape, and a GotOcr2 image processor
  config is written from the vision settings. Nothing executable is copied.

Weights are converted one safetensors shard at a time (never the whole model in memory) into a temporary
folder that is renamed into place, so an interrupted conversion never leaves a half-written folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from x2i_core import CheckpointError, InputError, first_line

ORIGINAL_MODEL_TYPE = "internvl_chat"
#: the -hf checkpoints' chat template shape: one <IMG_CONTEXT> line per image, one <video> line per video
NATIVE_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<IMG_CONTEXT>\\n' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<video>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # InternVL's own normalisation

# InternViT name -> native name, applied in order to the part after "vision_model."
_VISION_RENAMES = (
    (r"\.layers\.", ".layer."),
    (r"embeddings\.class_embedding$", "embeddings.cls_token"),
    (r"embeddings\.position_embedding$", "embeddings.position_embeddings"),
    (r"embeddings\.patch_embedding\.", "embeddings.patch_embeddings.projection."),
    (r"\.ls(\d)$", r".lambda_\1"),
    (r"\.attn\.proj\.", ".attention.projection_layer."),
    (r"\.attn\.", ".attention."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
)
_PROJECTOR = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "added_tokens.json",
                    "special_tokens_map.json", "generation_config.json")


def is_original_layout(config: dict) -> bool:
    """True for OpenGVLab's original layout (config.json model_type "internvl_chat")."""
    return config.get("model_type") == ORIGINAL_MODEL_TYPE


def native_key(key: str) -> list[str]:
    """The native key(s) of one original key (a fused qkv gives three)."""
    if key.startswith("language_model."):
        return [key]
    if key.startswith("mlp1."):
        index, rest = key.removeprefix("mlp1.").split(".", 1)
        if index not in _PROJECTOR:
            raise CheckpointError(f"unexpected projector weight {key} in an original InternVL checkpoint")
        return [f"multi_modal_projector.{_PROJECTOR[index]}.{rest}"]
    if not key.startswith("vision_model."):
        raise CheckpointError(f"unexpected weight {key} in an original InternVL checkpoint")
    new = key.removeprefix("vision_model.")
    for pattern, replacement in _VISION_RENAMES:
        new = re.sub(pattern, replacement, new)
    new = "vision_tower." + new
    if ".attention.qkv." in new:
        return [new.replace(".qkv.", f".{p}.") for p in ("q_proj", "k_proj", "v_proj")]
    return [new]


def convert_state_dict(tensors: dict) -> dict:
    """Original tensors -> native tensors: renames, and each fused vision qkv split into equal thirds of its rows."""
    out = {}
    for key, tensor in tensors.items():
        names = native_key(key)
        if len(names) == 3:
            if tensor.shape[0] % 3:
                raise CheckpointError(f"{key} has {tensor.shape[0]} rows, not three equal q/k/v parts")
            for name, part in zip(names, tensor.chunk(3, dim=0)):
                out[name] = part.contiguous()
        else:
            out[names[0]] = tensor
    return out


def native_config(original: dict, image_token_id: int):
    """An InternVLConfig from an original config.json's llm_config and vision_config."""
    from transformers import InternVLConfig

    llm = dict(original.get("llm_config") or {})
    vision = dict(original.get("vision_config") or {})
    # InternVL's own config code picks the language model by architectures[0]; to_dict() adds model_type too
    architecture = (llm.get("architectures") or [None])[0]
    if llm.get("model_type", "qwen2") != "qwen2" or architecture not in (None, "Qwen2ForCausalLM"):
        raise CheckpointError(
            f"this InternVL checkpoint's language model is {architecture or llm.get('model_type')!r}; only Qwen2 "
            "language models (InternVL2.5-1B/4B, InternVL3) convert"
        )
    llm["model_type"] = "qwen2"
    # the originals ask for flash attention and carry loader bookkeeping; the encoder picks its own attention
    for key in ("architectures", "auto_map", "_name_or_path", "use_bfloat16", "transformers_version",
                "attn_implementation", "_attn_implementation", "_attn_implementation_autoset"):
        llm.pop(key, None)
    size = vision.get("image_size", original.get("force_image_size", 448))
    vision_native = dict(
        hidden_size=vision["hidden_size"], intermediate_size=vision["intermediate_size"],
        num_hidden_layers=vision["num_hidden_layers"], num_attention_heads=vision["num_attention_heads"],
        image_size=size, patch_size=vision["patch_size"], num_channels=vision.get("num_channels", 3),
        attention_bias=vision.get("qkv_bias", True), use_qk_norm=vision.get("qk_normalization", False),
        norm_type=vision.get("norm_type", "layer_norm"), layer_norm_eps=vision.get("layer_norm_eps", 1e-6),
        hidden_act=vision.get("hidden_act", "gelu"), use_absolute_position_embeddings=True, use_mean_pooling=True,
    )
    ratio = float(original.get("downsample_ratio", 0.5))
    patches = int(size) // int(vision["patch_size"])
    return InternVLConfig(
        text_config=llm, vision_config=vision_native, image_token_id=image_token_id,
        image_seq_length=int(patches * ratio) ** 2, downsample_ratio=ratio,
        vision_feature_layer=int(original.get("select_layer", -1)),
        tie_word_embeddings=bool(llm.get("tie_word_embeddings", False)),
        architectures=["InternVLForConditionalGeneration"],
    )


def source_digest(source: Path) -> str:
    """A short sha256 naming a source folder's content cheaply: config.json, and each weight file's name, size,
    safetensors header (names, shapes, offsets) and last 64 KiB (no need to hash gigabytes)."""
    digest = hashlib.sha256((source / "config.json").read_bytes())
    for path in sorted(source.glob("*.safetensors")):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as f:
            header = int.from_bytes(f.read(8), "little")
            digest.update(f.read(min(header, 100_000_000)))
            f.seek(max(0, size - 65536))
            digest.update(f.read())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    """Where converted checkpoints are kept: $X2I_CACHE_DIR/converted, default ~/.cache/x2i/converted."""
    return Path(os.environ.get("X2I_CACHE_DIR") or Path.home() / ".cache" / "x2i").expanduser() / "converted"


def local_source(pretrained: str, revision: str | None = None) -> Path:
    """A local folder holding the original checkpoint: the folder given, or a hub snapshot without code files."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(pretrained, revision=revision, allow_patterns=["*.json", "*.safetensors",
                                                                                        "*.txt", "*.jinja"]))
    except Exception as exc:
        raise CheckpointError(f"cannot download the InternVL checkpoint {pretrained}: {first_line(exc)}") from exc


def converted_folder(source: Path) -> Path:
    """The native folder for an original checkpoint folder, converted once into the cache."""
    target = cache_root() / source_digest(source)
    if (target / "config.json").is_file():
        return target
    return convert_original(source, target)


def convert_original(source: str | Path, output: str | Path) -> Path:
    """Convert an original-layout InternVL folder into a native one at `output` (written atomically)."""
    source, output = Path(source).expanduser(), Path(output).expanduser()
    config_file = source / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{source} has no config.json, so it is not an InternVL checkpoint folder")
    original = json.loads(config_file.read_text(encoding="utf-8"))
    if not is_original_layout(original):
        raise CheckpointError(f"{source} holds a {original.get('model_type')!r} model, not an original InternVL "
                              f"checkpoint (model_type {ORIGINAL_MODEL_TYPE!r})")
    if output.exists() and any(output.iterdir()):
        raise InputError(f"output folder {output} is not empty")
    shards = sorted(source.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{source} has no .safetensors weights (pickled .bin checkpoints are not read)")
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        tokenizer = _write_tokenizer(source, work)
        image_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        if image_token_id is None or image_token_id == tokenizer.unk_token_id:
            raise CheckpointError(f"{source}'s tokenizer has no <IMG_CONTEXT> token")
        native_config(original, image_token_id).save_pretrained(work)
        _write_weights(shards, source, work)
        _write_image_processor(original, work)
        for path in work.iterdir():  # transformers and mkdtemp write 0600/0700; the cache is the user's
            path.chmod(0o644)
        work.chmod(0o755)
        if output.exists():
            output.rmdir()
        os.replace(work, output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return output


def _write_weights(shards: list[Path], source: Path, work: Path) -> None:
    from safetensors.torch import load_file, save_file

    weight_map = {}
    for shard in shards:
        try:
            tensors = load_file(str(shard))
        except Exception as exc:
            raise CheckpointError(f"{shard} is not a readable safetensors file: {first_line(exc)}") from exc
        converted = convert_state_dict(tensors)
        save_file(converted, str(work / shard.name), metadata={"format": "pt"})
        weight_map.update({key: shard.name for key in converted})
        del tensors, converted
    if len(shards) > 1 or (source / "model.safetensors.index.json").is_file():
        total = sum((work / s.name).stat().st_size for s in shards)
        (work / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))


def _write_tokenizer(source: Path, work: Path):
    """Copy the tokenizer's data files (never code), then save it with the native chat template."""
    from transformers import AutoTokenizer

    staging = work / ".tokenizer"
    staging.mkdir()
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, staging / name)
    config = staging / "tokenizer_config.json"
    if config.is_file():  # auto_map points at remote code we never run; Qwen2Tokenizer reads these files
        data = json.loads(config.read_text(encoding="utf-8"))
        data.pop("auto_map", None)
        data.setdefault("tokenizer_class", "Qwen2Tokenizer")
        config.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(staging))
    except Exception as exc:
        raise CheckpointError(f"cannot read the tokenizer of {source}: {first_line(exc)}") from exc
    tokenizer.chat_template = NATIVE_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(work))
    if (staging / "generation_config.json").is_file():
        shutil.copy(staging / "generation_config.json", work / "generation_config.json")
    shutil.rmtree(staging)
    return tokenizer


def _write_image_processor(original: dict, work: Path) -> None:
    vision = original.get("vision_config") or {}
    size = int(original.get("force_image_size") or vision.get("image_size", 448))
    (work / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "GotOcr2ImageProcessor", "processor_class": "InternVLProcessor",
        "size": {"height": size, "width": size}, "crop_to_patches": bool(original.get("dynamic_image_size", True)),
        "min_patches": 1, "max_patches": int(original.get("max_dynamic_patch", 12)),
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "do_convert_rgb": True, "resample": 3,
    }, indent=2))

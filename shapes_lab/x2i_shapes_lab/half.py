"""Store a trained folder's weights in fp16 (how the shipped weights are kept: half the bytes, same figures;
the loaders upcast to the dtype asked for). Each file is written beside the old one, then moved over it."""
from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file


def _mark_fp16(config: dict) -> dict:
    """Every "dtype" / "torch_dtype" entry that says float32, nested configs included, now says float16."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            value = _mark_fp16(value)
        elif key in ("dtype", "torch_dtype") and value == "float32":
            value = "float16"
        out[key] = value
    return out


def halve_folder(folder: str | Path) -> list[Path]:
    """Cast every float32 tensor of every .safetensors file under `folder` to float16, in place; returns the
    files changed. Integer tensors and other float types are left as they are."""
    changed = []
    for path in sorted(Path(folder).rglob("*.safetensors")):
        tensors = load_file(path)
        if not any(t.dtype.is_floating_point and t.itemsize == 4 for t in tensors.values()):
            continue
        half = {k: t.half() if t.dtype.is_floating_point and t.itemsize == 4 else t for k, t in tensors.items()}
        tmp = path.with_suffix(".tmp")
        save_file(half, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
        changed.append(path)
        config = path.parent / "config.json"
        if config.is_file():
            config.write_text(json.dumps(_mark_fp16(json.loads(config.read_text())), indent=2) + "\n")
    return changed

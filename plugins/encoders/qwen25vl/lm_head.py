"""Reading one tensor from a checkpoint's safetensors (the lm_head, only when the encoder first answers)."""
from __future__ import annotations

import json
from pathlib import Path


def lm_head_weight(pretrained: str, keys: tuple[str, ...], hub: dict):
    """The first of `keys` found in the checkpoint's safetensors (sharded or not), or None when the checkpoint has
    none of them (tied embeddings: the caller reuses the input embeddings)."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    def find(name):
        try:
            return cached_file(pretrained, name, _raise_exceptions_for_missing_entries=False, **hub)
        except OSError:
            return None

    index = find("model.safetensors.index.json")
    if index:
        weight_map = json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"]
        files = {key: weight_map[key] for key in keys if key in weight_map}
    else:
        files = {key: "model.safetensors" for key in keys}
    for key, fname in files.items():
        path = find(fname)
        if not path:
            continue
        with safe_open(path, framework="pt") as f:
            if key in f.keys():
                return f.get_tensor(key)
    return None

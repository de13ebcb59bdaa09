"""Precomputed teacher embeddings, so T5 and CLIP need not sit in memory while the AlignNet trains.

Layout of a cache folder: shards `teacher-r<rank>-<n>.safetensors` holding prompt_embeds (N, L, D),
pooled_prompt_embeds (N, P) and, when the teacher masks padding, attention_mask (N, L); `index.json`
mapping sha256(prompt) to [shard, row]; `meta.json` describing the teacher. Size: FLUX.1-dev pads T5
to 512 tokens of width 4096, i.e. 4 MiB per prompt in bf16 (40 GiB per 10K prompts), so the cache
trades disk for ~9.5 GB of GPU memory; shorten with --teacher-max-length if the corpus allows.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError, InputError
from ..interfaces import Conditioning, TeacherConditioner

INDEX = "index.json"
META = "meta.json"


def prompt_key(text: str) -> str:
    """The cache key of a prompt: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_shard(out_dir: Path, name: str, rows: list[Conditioning], dtype) -> None:
    tensors = {
        "prompt_embeds": torch.cat([c.prompt_embeds for c in rows]).to("cpu", dtype).contiguous(),
        "pooled_prompt_embeds": torch.cat([c.pooled_prompt_embeds for c in rows]).to("cpu", dtype).contiguous(),
    }
    if rows[0].attention_mask is not None:
        tensors["attention_mask"] = torch.cat([c.attention_mask for c in rows]).to("cpu", torch.uint8).contiguous()
    save_file(tensors, str(out_dir / name))


@torch.no_grad()
def precompute_teacher(
    teacher: TeacherConditioner,
    prompts: Iterable[str],
    out_dir: str | Path,
    *,
    batch_size: int = 8,
    shard_size: int = 1024,
    rank: int = 0,
    world_size: int = 1,
    dtype: torch.dtype | None = None,
    describe: dict | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Encode this rank's share (every world_size-th unique prompt) into shards; returns how many it wrote.

    Call `merge_indexes(out_dir)` on one process after every rank is done.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index: dict[str, list] = {}
    seen: set[str] = set()
    pending_rows: list[Conditioning] = []
    shard_number, shard_rows = 0, 0
    batch: list[str] = []
    count = 0

    def flush_shard():
        nonlocal shard_number, shard_rows, pending_rows
        if pending_rows:
            _write_shard(out_dir, f"teacher-r{rank}-{shard_number:05d}.safetensors", pending_rows, dtype)
            shard_number, shard_rows, pending_rows = shard_number + 1, 0, []

    def encode(texts: list[str]):
        nonlocal shard_rows, count
        cond = teacher.encode_text(texts)
        for i, text in enumerate(texts):
            name = f"teacher-r{rank}-{shard_number:05d}.safetensors"
            index[prompt_key(text)] = [name, shard_rows]
            mask = None if cond.attention_mask is None else cond.attention_mask[i:i + 1]
            pending_rows.append(Conditioning(cond.prompt_embeds[i:i + 1], cond.pooled_prompt_embeds[i:i + 1], mask))
            shard_rows += 1
            count += 1
            if shard_rows == shard_size:
                flush_shard()
        if on_batch is not None:
            on_batch(len(texts))

    unique = 0
    for text in prompts:
        key = prompt_key(text)
        if key in seen:
            continue
        seen.add(key)
        unique += 1
        if (unique - 1) % world_size != rank:
            continue
        batch.append(text)
        if len(batch) == batch_size:
            encode(batch)
            batch = []
    if batch:
        encode(batch)
    flush_shard()
    (out_dir / f"index-r{rank}.json").write_text(json.dumps(index))
    if rank == 0:
        (out_dir / META).write_text(json.dumps({**(describe or {}), "format": 1}, indent=2))
    return count


def merge_indexes(out_dir: str | Path) -> int:
    """Join every rank's index into index.json; returns the number of prompts."""
    out_dir = Path(out_dir)
    merged: dict[str, list] = {}
    for part in sorted(out_dir.glob("index-r*.json")):
        for key, where in json.loads(part.read_text()).items():
            merged.setdefault(key, where)
    (out_dir / INDEX).write_text(json.dumps(merged))
    return len(merged)


class TeacherCache:
    """Looks prompts up in a cache folder; returns the teacher's Conditioning as `encode_text` would."""

    def __init__(self, folder: str | Path, device=None, dtype: torch.dtype | None = None):
        self.folder = Path(folder)
        if not (self.folder / INDEX).is_file():
            raise CheckpointError(f"--teacher-cache {self.folder}: no {INDEX} (build it with --precompute-teacher)")
        self.index = json.loads((self.folder / INDEX).read_text())
        meta = self.folder / META
        self.meta = json.loads(meta.read_text()) if meta.is_file() else {}
        self.device, self.dtype = device, dtype
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _row(self, text: str) -> dict[str, torch.Tensor]:
        where = self.index.get(prompt_key(text))
        if where is None:
            short = text if len(text) <= 60 else text[:57] + "..."
            raise InputError(f"prompt {short!r} is not in the teacher cache {self.folder} (built from another corpus?)")
        shard, row = where
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = safe_open(str(self.folder / shard), framework="pt")
        return {name: handle.get_slice(name)[row:row + 1] for name in handle.keys()}

    def encode_text(self, texts: Sequence[str]) -> Conditioning:
        """The cached teacher conditioning of each text, stacked."""
        rows = [self._row(t) for t in texts]
        prompt = torch.cat([r["prompt_embeds"] for r in rows]).to(self.device, self.dtype)
        pooled = torch.cat([r["pooled_prompt_embeds"] for r in rows]).to(self.device, self.dtype)
        mask = None
        if "attention_mask" in rows[0]:
            mask = torch.cat([r["attention_mask"] for r in rows]).to(self.device).bool()
        return Conditioning(prompt, pooled, mask)

"""Batch generation: many prompts from a JSONL file with models loaded once, resumable, split across processes.

Each line is one prompt in the conversation format: {"prompt": "text with <image:a.png> references"} or
{"messages": [chat messages, the last one the user's]}, plus optional per-line settings (BATCH_KEYS: seed,
num_images, steps, guidance, true_cfg, negative_prompt, width, height, reason, and "id", which names the files).
Media paths are relative to the JSONL file. Images go to OUT/<id>-<i>.png.

Resuming: a line is finished when the manifest part of the process that made it lists it (each entry is
appended after its PNGs were written atomically), so a killed run redoes only the unfinished lines. With
several processes (`accelerate launch` or `torchrun`), process r takes lines r, r + n, r + 2n ...; each appends
to its own part (.x2i-batch/part-<r>.jsonl) and, once all are done, process 0 writes manifest.json atomically.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import InputError
from .prompt import MultimodalPrompt
from .prompt_files import parse_inline, prompt_from_messages

#: per-line settings a line may carry (besides "prompt"/"messages" and "id"), with their types
BATCH_KEYS = {"seed": int, "num_images": int, "steps": int, "guidance": float, "true_cfg": float,
              "negative_prompt": str, "width": int, "height": int, "reason": bool}
PARTS = ".x2i-batch"
MANIFEST = "manifest.json"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class BatchItem:
    """One line of a batch file: its prompt, its file stem and its per-line settings."""

    line: int
    id: str
    prompt: MultimodalPrompt
    settings: dict[str, Any] = field(default_factory=dict)

    def paths(self, out_dir: Path, default_images: int = 1) -> list[Path]:
        """The PNGs this line writes."""
        count = int(self.settings.get("num_images", default_images))
        return [out_dir / f"{self.id}-{i}.png" for i in range(count)]


def _setting(key: str, value: Any, where: str) -> Any:
    kind = BATCH_KEYS[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def read_batch(path: str | os.PathLike) -> list[BatchItem]:
    """Every line of a batch file, checked (one line naming the file and line number for anything wrong)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"batch file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read batch file {path}: {type(exc).__name__}") from exc
    items, seen = [], set()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object with \"prompt\" or \"messages\"")
        unknown = sorted(set(row) - set(BATCH_KEYS) - {"prompt", "messages", "id"})
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (known: prompt, messages, id, "
                             f"{', '.join(BATCH_KEYS)})")
        if ("prompt" in row) == ("messages" in row):
            raise InputError(f"{where}: give exactly one of \"prompt\" (text) or \"messages\" (chat messages)")
        if "messages" in row:
            prompt = prompt_from_messages(row["messages"], path.parent, source=where)
        elif isinstance(row["prompt"], str):
            prompt = MultimodalPrompt(tuple(parse_inline(row["prompt"], path.parent)))
        else:
            raise InputError(f"{where}: \"prompt\" must be a string")
        if prompt.is_empty():
            raise InputError(f"{where}: the prompt is empty")
        item_id = str(row.get("id", f"{len(items):05d}"))
        if not _SAFE_ID.match(item_id):
            raise InputError(f"{where}: \"id\" must be a file-name-safe word (letters, digits, . _ -), got {item_id!r}")
        if item_id in seen:
            raise InputError(f"{where}: the id {item_id!r} is used twice (it names the output files)")
        seen.add(item_id)
        settings = {k: _setting(k, row[k], where) for k in BATCH_KEYS if k in row}
        items.append(BatchItem(number, item_id, prompt, settings))
    if not items:
        raise InputError(f"batch file {path} holds no prompts")
    return items


def shard(items: list[BatchItem], rank: int, world: int) -> list[BatchItem]:
    """The lines process `rank` of `world` makes: every world-th line, starting at rank."""
    return items[rank::world]


def _part(out_dir: Path, rank: int) -> Path:
    return out_dir / PARTS / f"part-{rank}.jsonl"


def finished_ids(out_dir: Path) -> set[str]:
    """Ids listed in any manifest part whose images are all still there."""
    done = set()
    for part in sorted((out_dir / PARTS).glob("part-*.jsonl")):
        for raw in part.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: its images are redone
            if all((out_dir / name).is_file() for name in entry.get("files", ())):
                done.add(entry["id"])
    return done


def record(out_dir: Path, rank: int, entry: dict) -> None:
    """Append one finished line to this process's manifest part (one write of one line, then fsync)."""
    part = _part(out_dir, rank)
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_manifest(out_dir: Path, items: Iterable[BatchItem]) -> Path:
    """manifest.json: every finished line in file order, written atomically (temp file + rename)."""
    entries = {}
    for part in sorted((out_dir / PARTS).glob("part-*.jsonl")):
        for raw in part.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue
            entries[entry["id"]] = entry
    ordered = [entries[item.id] for item in items if item.id in entries]
    target = out_dir / MANIFEST
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=out_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"images": sum(len(e["files"]) for e in ordered), "lines": ordered}, handle, indent=1,
                  ensure_ascii=False)
    from .outputs import follow_umask

    follow_umask([tmp])
    os.replace(tmp, target)
    return target


def run_batch(generate: Callable[..., list], items: list[BatchItem], out_dir: str | os.PathLike, *,
              defaults: dict[str, Any], rank: int = 0, world: int = 1,
              on_item: Callable[[BatchItem, bool], None] | None = None) -> int:
    """Make this process's unfinished lines; returns how many it made. `generate(prompt, **settings)` returns
    PIL images (X2IPipeline.__call__); `defaults` are the command's settings, which a line's own override.
    `on_item(item, skipped)` reports progress."""
    from .generate import save_images

    out = Path(out_dir)
    done = finished_ids(out)
    made = 0
    for item in shard(items, rank, world):
        if item.id in done:
            if on_item is not None:
                on_item(item, True)
            continue
        settings = {**defaults, **item.settings}
        images = generate(item.prompt, **settings)
        paths = item.paths(out, settings.get("num_images", 1))
        for image, path in zip(images, paths):
            save_images([image], path)
        entry = {"id": item.id, "line": item.line, "rank": rank, "files": [p.name for p in paths],
                 "seed": settings.get("seed", 0), "prompt": item.prompt.describe()}
        if images and "answer" in images[0].info:
            entry["answer"] = images[0].info["answer"]
        record(out, rank, entry)
        made += 1
        if on_item is not None:
            on_item(item, False)
    return made

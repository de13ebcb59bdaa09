"""Prompt streams for alignment: plain text, JSONL and WebDataset tar shards, read lazily.

The order is a pure function of (seed, epoch): each epoch shuffles the file list and passes prompts
through a seeded shuffle buffer, so a run is reproducible and resumes from a position (the number of
prompts already consumed by all ranks together) by replaying the stream up to it. Ranks take global
items round-robin, so every rank sees the same number of prompts and the union is the global order.
Text is decoded as UTF-8 line by line from bytes (only b"\\n" ends a line, so U+2028 and friends
inside captions survive), and a BOM at the start of a file is dropped.
"""
from __future__ import annotations

import glob
import json
import random
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import InputError, first_line

TEXT_SUFFIXES = (".txt", ".text", ".caption", ".captions")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_ALTERNATIVES = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """WebDataset-style expansion, leftmost brace first: 'a-{000..002}.tar' -> a-000.tar a-001.tar a-002.tar;
    '{x,y}' -> x y."""
    found = [m for m in (_RANGE.search(pattern), _ALTERNATIVES.search(pattern)) if m]
    if not found:
        return [pattern]
    match = min(found, key=lambda m: m.start())
    head, tail = pattern[: match.start()], pattern[match.end():]
    if match.re is _RANGE:
        lo, hi = match.group(1), match.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        choices = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
    else:
        choices = match.group(1).split(",")
    return [out for choice in choices for out in expand_braces(head + choice + tail)]


def resolve_files(specs: Sequence[str]) -> list[Path]:
    """Paths, folders (every prompt file inside), globs and brace lists -> an ordered list of files."""
    if isinstance(specs, (str, Path)):
        specs = [str(specs)]
    files: list[Path] = []
    for spec in specs:
        for pattern in expand_braces(str(spec)):
            path = Path(pattern).expanduser()
            if any(ch in pattern for ch in "*?["):
                matched = sorted(Path(p) for p in glob.glob(str(path)))
                if not matched:
                    raise InputError(f"--data {pattern}: no file matches")
                files += [p for p in matched if p.is_file()]
            elif path.is_dir():
                inside = sorted(p for p in path.rglob("*") if p.is_file() and file_format(p) is not None)
                if not inside:
                    raise InputError(f"--data {path}: the folder holds no .txt, .jsonl or .tar prompt files")
                files += inside
            elif path.is_file():
                files.append(path)
            else:
                raise InputError(f"--data {pattern}: no such file")
    if not files:
        raise InputError("no prompt files given (--data PATH)")
    return files


def file_format(path: Path) -> str | None:
    """'text', 'jsonl' or 'tar' from the file name (anything unknown reads as text)."""
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text (byte {exc.start})") from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) of a file, UTF-8, BOM dropped, CRLF tolerated."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield number, _decode(raw.rstrip(b"\r\n"), f"{path}:{number}")


def read_text_prompts(path: Path) -> Iterator[str]:
    """One prompt per non-blank line."""
    for _, line in _lines(path):
        if line.strip():
            yield line.strip()


def _caption(obj, key: str, where: str) -> str:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object with key {key!r}, got {type(obj).__name__}")
    if key not in obj:
        keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
        raise InputError(f"{where}: no key {key!r} (keys: {keys}); choose one with --text-key")
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(f"{where}: {key!r} is a {type(value).__name__}, not a string")
    return value.strip()


def read_jsonl_prompts(path: Path, key: str) -> Iterator[str]:
    """obj[key] of each JSON line; blank lines skipped."""
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{where}: not valid JSON ({first_line(exc)})") from None
        text = _caption(obj, key, where)
        if text:
            yield text


def read_tar_prompts(path: Path, key: str) -> Iterator[str]:
    """Captions of a WebDataset shard: each sample's .json member (obj[key]), else its .txt member."""
    try:
        archive = tarfile.open(path, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{path}: broken WebDataset shard, not a readable tar ({exc})") from None
    member_name = "its start"
    pending: dict[str, tuple[str, str]] = {}  # sample key -> (kind, caption); a .json beats a .txt
    order: list[str] = []
    try:
        with archive:
            for member in archive:
                member_name = member.name
                if not member.isfile():
                    continue
                stem, dot, ext = Path(member.name).name.partition(".")
                sample = str(Path(member.name).parent / stem)
                ext = ext.lower()
                if ext not in ("json", "txt"):
                    continue
                data = archive.extractfile(member).read()
                where = f"{path}:{member.name}"
                if ext == "json":
                    try:
                        obj = json.loads(_decode(data, where))
                    except ValueError as exc:
                        raise InputError(f"{where}: not valid JSON ({first_line(exc)})") from None
                    caption = ("json", _caption(obj, key, where))
                elif sample in pending:
                    continue
                else:
                    caption = ("txt", _decode(data, where).strip())
                if sample not in pending:
                    order.append(sample)
                pending[sample] = caption
                # WebDataset keeps a sample's members together: flush samples that are complete.
                while len(order) > 1:
                    done = order.pop(0)
                    text = pending.pop(done)[1]
                    if text:
                        yield text
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{path}: broken WebDataset shard near {member_name} ({exc})") from None
    for sample in order:
        text = pending[sample][1]
        if text:
            yield text


def read_prompts(path: Path, key: str = "text") -> Iterator[str]:
    """Every prompt of one file, in file order; InputError if the file has none."""
    kind = file_format(path) or "text"
    reader = {"text": read_text_prompts, "jsonl": read_jsonl_prompts, "tar": read_tar_prompts}[kind]
    count = 0
    for prompt in (reader(path) if kind == "text" else reader(path, key)):
        count += 1
        yield prompt
    if count == 0:
        what = {"text": "no non-blank line", "jsonl": "no JSON line", "tar": "no sample with a .json or .txt caption"}
        raise InputError(f"{path}: empty, {what[kind]} (no prompts)")


def shuffled(items: Iterator[str], rng: random.Random, buffer_size: int) -> Iterator[str]:
    """A seeded shuffle buffer: constant memory, deterministic for a given rng state."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[str] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = rng.randrange(buffer_size)
        yield buffer[index]
        buffer[index] = item
    rng.shuffle(buffer)
    yield from buffer


@dataclass
class PromptStream:
    """An endless, seeded, rank-sharded, resumable stream of prompts over a list of files.

    `position` counts prompts consumed by all ranks together; iterate with `batches(n)`.
    """

    files: list[Path]
    text_key: str = "text"
    seed: int = 0
    shuffle: bool = True
    buffer_size: int = 10000
    rank: int = 0
    world_size: int = 1
    position: int = 0

    @classmethod
    def from_specs(cls, specs: Sequence[str], **kwargs) -> "PromptStream":
        """Resolve paths / globs / brace lists and check that every file opens and has a prompt."""
        stream = cls(resolve_files(specs), **kwargs)
        stream.check()
        return stream

    def check(self) -> None:
        """Read each file up to its first prompt, so an empty or unreadable file fails before models load."""
        for path in self.files:
            next(iter(read_prompts(path, self.text_key)))

    def epoch_order(self, epoch: int) -> Iterator[str]:
        """All prompts of one epoch in their global order."""
        rng = random.Random(f"x2i-align:{self.seed}:{epoch}")
        files = list(self.files)
        if not self.shuffle:
            for path in files:
                yield from read_prompts(path, self.text_key)
            return
        rng.shuffle(files)
        chained = (prompt for path in files for prompt in read_prompts(path, self.text_key))
        yield from shuffled(chained, rng, self.buffer_size)

    def global_stream(self) -> Iterator[tuple[int, str]]:
        """(global index, prompt) from index 0, epoch after epoch, forever."""
        index, epoch = 0, 0
        while True:
            for prompt in self.epoch_order(epoch):
                yield index, prompt
                index += 1
            epoch += 1

    def batches(self, batch_size: int) -> Iterator[list[str]]:
        """This rank's batches, starting at `position`; each batch advances `position` by batch_size * world_size."""
        per_step = batch_size * self.world_size
        start = self.position
        batch: list[str] = []
        for index, prompt in self.global_stream():
            if index < start:
                continue
            if index % self.world_size == self.rank:
                batch.append(prompt)
            if (index - start + 1) % per_step == 0:
                self.position = index + 1
                yield batch
                batch = []

    def first(self, n: int) -> list[str]:
        """The first n prompts in file order (no shuffle, no sharding): held-out evaluation sets."""
        out: list[str] = []
        for path in self.files:
            for prompt in read_prompts(path, self.text_key):
                out.append(prompt)
                if len(out) == n:
                    return out
        return out

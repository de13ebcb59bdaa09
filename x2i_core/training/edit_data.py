"""Image+text->image training data: a folder with a JSONL index of (input images, instruction, target image).

    DIR/index.jsonl (or any one *.jsonl in DIR, or the .jsonl file itself), one line per example:
    {"inputs": ["src.png", ...], "instruction": "make it blue", "target": "tgt.png"}   (paths relative to the index)

Everything is checked when the folder is read, before any model loads, each problem as one line naming the index
line: a missing key or file, an unreadable image, an empty index, a target of another size than the first input or
than the other targets. Shared by `x2i train-lightcontrol` (the branch reads inputs[0], the source) and image+text
->image LoRA training.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, first_line


@dataclass(frozen=True)
class EditExample:
    """One training example: the images the MLLM reads, the instruction, the image to produce."""

    inputs: tuple[str, ...]
    instruction: str
    target: str


def find_index(data: str | Path) -> Path:
    """The JSONL index of a folder (index.jsonl, else its only *.jsonl), or the file given."""
    path = Path(data).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(f"--data {data}: no such folder or file")
    if (path / "index.jsonl").is_file():
        return path / "index.jsonl"
    found = sorted(path.glob("*.jsonl"))
    if len(found) != 1:
        raise InputError(f"--data {data}: expected index.jsonl (or one *.jsonl) in the folder, found "
                         f"{len(found) or 'none'}")
    return found[0]


def _image_size(path: Path, where: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError(f"{where}: image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{where}: cannot read the image {path}: {first_line(exc)}") from None


def read_edit_folder(data: str | Path, *, check_images: bool = True) -> tuple[list[EditExample], tuple[int, int]]:
    """(examples with absolute paths, (width, height) shared by every target), every line checked."""
    index = find_index(data)
    root = index.parent
    examples, size = [], None
    try:
        lines = index.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the index {index}: {first_line(exc)}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{index.name} line {number}"
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{where}: not JSON ({first_line(exc)})") from None
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected an object with inputs, instruction and target")
        for key in ("target", "instruction", "inputs"):
            if key not in item:
                raise InputError(f"{where}: no {key!r}")
        inputs = item["inputs"] if isinstance(item["inputs"], list) else [item["inputs"]]
        if not inputs or not all(isinstance(p, str) for p in inputs) or not isinstance(item["target"], str):
            raise InputError(f"{where}: 'inputs' must be a non-empty list of image paths and 'target' one path")
        if not isinstance(item["instruction"], str):
            raise InputError(f"{where}: 'instruction' must be text")
        example = EditExample(tuple(str(root / p) for p in inputs), item["instruction"], str(root / item["target"]))
        if check_images:
            target_size = _image_size(Path(example.target), f"{where} target")
            source_size = _image_size(Path(example.inputs[0]), f"{where} input")
            for extra in example.inputs[1:]:
                _image_size(Path(extra), f"{where} input")
            if source_size != target_size:
                raise InputError(f"{where}: the target is {target_size[0]}x{target_size[1]} but the first input is "
                                 f"{source_size[0]}x{source_size[1]}: an edit's source and target must be one size")
            if size is not None and target_size != size:
                raise InputError(f"{where}: the target is {target_size[0]}x{target_size[1]}, the earlier ones "
                                 f"{size[0]}x{size[1]}: resize the data to one size")
            size = target_size
        examples.append(example)
    if not examples:
        raise InputError(f"the index {index} holds no examples")
    return examples, size or (0, 0)


class IndexStream:
    """Example indices in a seeded order (a new permutation each epoch); `position` = indices handed out by all ranks
    together, so a resumed run continues the same order. Rank r takes global items r, r + world, ..."""

    def __init__(self, count: int, seed: int, rank: int = 0, world: int = 1):
        self.count, self.seed, self.rank, self.world = count, seed, rank, world
        self.position = 0

    def _item(self, global_index: int) -> int:
        import random

        epoch, offset = divmod(global_index, self.count)
        order = list(range(self.count))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order[offset]

    def batches(self, batch_size: int):
        """Endless batches of `batch_size` indices for this rank."""
        while True:
            start = self.position
            picks = [self._item(start + i * self.world + self.rank) for i in range(batch_size)]
            self.position = start + batch_size * self.world
            yield picks

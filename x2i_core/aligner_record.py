"""What an AlignNet folder records about the models it was aligned with, and how commands take it as defaults.

`x2i align` writes the encoder and backbone (the registered name, plus the hub id or absolute folder actually
loaded) and the training resolution into the AlignNet's config.json and x2i_align.json; `x2i convert` writes
the names it is given. `x2i generate --aligner DIR` and `x2i eval-align --aligner DIR` take them as defaults;
options given explicitly win, and a difference from the record is said in one note line.

Reads JSON only (no torch), so the CLI settles its models before anything heavy loads.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import PluginError
from .plugins import get_registry

KINDS = ("encoder", "backbone")


@dataclass(frozen=True)
class AlignerRecord:
    """The models an AlignNet was aligned with (None where it records nothing)."""

    encoder: str | None = None
    encoder_checkpoint: str | None = None
    backbone: str | None = None
    backbone_checkpoint: str | None = None
    resolution: int | None = None

    def name(self, kind: str) -> str | None:
        return self.encoder if kind == "encoder" else self.backbone

    def checkpoint(self, kind: str) -> str | None:
        return self.encoder_checkpoint if kind == "encoder" else self.backbone_checkpoint


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def read_record(aligner: str | os.PathLike | None) -> AlignerRecord:
    """The record of an AlignNet folder, or of a registered aligner's folder (names from its spec otherwise).

    config.json first; x2i_align.json fills the checkpoints of folders written before config.json held them.
    A hub id or a folder without a record gives an empty record (bad folders are reported when they load).
    """
    if not aligner:
        return AlignerRecord()
    spec = get_registry().components["aligner"].get(str(aligner))
    folder = Path(spec.pretrained if spec is not None and spec.pretrained else str(aligner)).expanduser()
    config, trained = _json(folder / "config.json"), _json(folder / "x2i_align.json")
    if not config and spec is not None:
        return AlignerRecord(encoder=_text(spec.fits.get("encoder")), backbone=_text(spec.fits.get("backbone")))
    resolution = config.get("resolution")
    return AlignerRecord(
        encoder=_text(config.get("encoder")) or _text(trained.get("encoder")),
        encoder_checkpoint=_text(config.get("encoder_checkpoint")) or _text(trained.get("encoder_path")),
        backbone=_text(config.get("backbone")) or _text(trained.get("backbone")),
        backbone_checkpoint=_text(config.get("backbone_checkpoint")) or _text(trained.get("backbone_path")),
        resolution=resolution if isinstance(resolution, int) and not isinstance(resolution, bool) else None,
    )


def absolute_if_local(checkpoint: str | None) -> str | None:
    """A checkpoint that exists on disk as an absolute path (so the record works from any folder); hub ids as given."""
    if checkpoint is None:
        return None
    path = Path(checkpoint).expanduser()
    return str(path.resolve()) if path.exists() else checkpoint


def resolve_model(kind: str, name: str, checkpoint: str | None = None) -> tuple[str, str | None]:
    """(registered name, checkpoint actually loaded): a folder given as the name resolves to the plugin's name and
    the folder; a name without a checkpoint to its default. PluginError for a name no plugin registered."""
    spec, default = get_registry().resolve(kind, name)
    return spec.name, absolute_if_local(checkpoint or default)


def _same(kind: str, recorded: tuple[str, str | None], used: tuple[str, str | None]) -> bool:
    try:
        recorded, used = resolve_model(kind, *recorded), resolve_model(kind, *used)
    except PluginError:  # a name no plugin knows (any more): compare as written
        pass
    if recorded[1] and used[1]:
        return recorded[1] == used[1]
    return recorded[0] == used[0]


def _label(name: str, checkpoint: str | None) -> str:
    return f"{name} ({checkpoint})" if checkpoint and checkpoint != name else name


def fill_models(record: AlignerRecord, choice: dict[str, str | None]) -> tuple[dict[str, str | None], str | None]:
    """Fill `choice` (keys encoder, encoder_path, backbone, backbone_path; None = not given) from the record.

    Returns the filled choice and one note line when an option given explicitly differs from the record.
    An explicit name takes no recorded checkpoint (it belonged to the recorded name); an explicit checkpoint
    alone keeps the recorded name.
    """
    out = dict(choice)
    differ: list[tuple[str, str, str]] = []  # (kind, recorded, used)
    for kind in KINDS:
        name, path = choice.get(kind), choice.get(f"{kind}_path")
        rec_name, rec_ckpt = record.name(kind), record.checkpoint(kind)
        if rec_name is None:
            continue
        if name is None and path is None:
            out[kind], out[f"{kind}_path"] = rec_name, rec_ckpt
            continue
        out[kind] = name = name or rec_name
        if not _same(kind, (rec_name, rec_ckpt), (name, path)):
            differ.append((kind, _label(rec_name, rec_ckpt), _label(name, path)))
    if not differ:
        return out, None
    if len(differ) == 1:
        kind, recorded, used = differ[0]
        return out, f"Note: this AlignNet was aligned with {kind} {recorded}; using {used}"
    recorded = " and ".join(f"{kind} {rec}" for kind, rec, _ in differ)
    used = " and ".join(f"{kind} {use}" for kind, _, use in differ)
    return out, f"Note: this AlignNet was aligned with {recorded}; using {used}"

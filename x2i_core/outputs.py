"""Where x2i writes: a check that an output can be written, made before any model loads, and file modes that
follow the user's umask.

Why a probe file and not os.access: os.access says yes to root in a read-only folder and knows nothing of
read-only mounts; creating (and removing) a file in the nearest existing folder is the real question. The
check creates no folder, so a refused command leaves nothing behind.

Why chmod at all: tempfile.mkstemp creates 0600 files, and safetensors (so save_pretrained) writes its weights
0600 too, whatever the umask; a shared AlignNet folder or image would then be unreadable to the rest of a group.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import InputError


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: str | os.PathLike, option: str = "-o") -> Path:
    """InputError unless `path` is a folder, or can be made as one, that this process may write into."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{option} {out}: a file is in the way (expected a folder)")
    _check_under(out, option, out)
    return out


def check_output_file(path: str | os.PathLike, option: str = "-o") -> Path:
    """InputError unless the file `path` can be written (created, or replaced) by this process."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise InputError(f"{option} {out}: is a folder (expected a file name)")
    _check_under(out.parent, option, out)
    return out


def _check_under(folder: Path, option: str, target: Path) -> None:
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise InputError(f"{option} {target}: {base} is a file, so nothing can be written under it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".x2i-write-test-", dir=base)
    except OSError as exc:
        raise InputError(f"{option} {target}: cannot write in {base} ({exc.strerror or type(exc).__name__})") from None
    os.close(fd)
    os.unlink(probe)


def umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored, which is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(paths: Iterable[str | os.PathLike]) -> None:
    """Give files 0666 and folders 0777, less the umask: what open() and mkdir() would have made."""
    mask = umask()
    for path in paths:
        path = Path(path)
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def save_pretrained(model, folder: str | os.PathLike) -> Path:
    """`model.save_pretrained(folder)` (safetensors), then the written config and weights follow the umask."""
    folder = Path(folder)
    model.save_pretrained(str(folder), safe_serialization=True)
    follow_umask(p for p in folder.iterdir() if p.is_file() and (p.name == "config.json" or ".safetensors" in p.name))
    return folder

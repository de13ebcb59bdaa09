"""Official AlignNets: the reference's released checkpoints, fetched from the hub once and converted.

A plugin registers each as plain data (an AlignerSpec whose factory is `x2i_core:OfficialAligner`, whose
`pretrained` is the hub repository and whose options name the file). On first use the file is downloaded with
huggingface_hub into its usual cache, read with `torch.load(weights_only=True)`, converted to a safetensors
AlignNet folder in x2i's cache (`$X2I_CACHE`, default ~/.cache/x2i, under aligners/NAME) together with
x2i_source.json (repository, file, revision, sha256 of the source and of the converted weights); later uses
load that folder after checking its weights' sha256, so a changed or tampered file is refused in one line.
Offline and not cached, one line says what to download and how `x2i fetch-aligner NAME --from FILE` fills
the cache by hand.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import CheckpointError, first_line

SOURCE_RECORD = "x2i_source.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"


def cache_root() -> Path:
    """x2i's own cache: $X2I_CACHE, else $XDG_CACHE_HOME/x2i, else ~/.cache/x2i."""
    if os.environ.get("X2I_CACHE"):
        return Path(os.environ["X2I_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "x2i"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (AlignNets are ~140 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def official_folder(name: str) -> Path:
    """Where the converted AlignNet of an official aligner lives."""
    return cache_root() / "aligners" / name


def download_source(repo_id: str, filename: str, revision: str | None, name: str) -> tuple[Path, str | None]:
    """The source file from the hub (or its local cache) and the commit it came from; one line when unreachable."""
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as exc:  # offline, not cached, gated, network errors: all say the same thing to the user
        raise CheckpointError(
            f"the official AlignNet {name!r} is not cached and cannot be downloaded ({type(exc).__name__}): fetch "
            f"{filename} from the Hugging Face repository {repo_id} by hand and run `x2i fetch-aligner {name} "
            f"--from FILE` (it is converted into {official_folder(name)})"
        ) from exc
    parts = path.parts
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else revision
    return path, commit


def prepare(name: str, repo_id: str, filename: str, *, revision: str | None = None, sha256: str | None = None,
            encoder: str | None = None, backbone: str | None = None, source: str | Path | None = None) -> Path:
    """The converted folder of an official aligner, made now if missing (from `source`, or the hub)."""
    folder = official_folder(name)
    if (folder / SOURCE_RECORD).is_file():
        check_folder(folder, name)
        return folder
    if source is not None:
        path, commit = Path(source).expanduser(), revision
        if not path.is_file():
            raise CheckpointError(f"--from: file not found: {path}")
    else:
        path, commit = download_source(repo_id, filename, revision, name)
    digest = sha256_of(path)
    if sha256 and digest != sha256:
        raise CheckpointError(f"{path} is not the released {filename} of {repo_id} (sha256 {digest[:12]}..., "
                              f"expected {sha256[:12]}...): a changed or corrupt file is refused")
    from .convert import convert_reference  # torch: only when something is converted

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        convert_reference(path, staging, encoder=encoder, backbone=backbone)
        record = {"name": name, "repo_id": repo_id, "filename": filename, "revision": commit,
                  "source_sha256": digest, "weights_sha256": sha256_of(staging / WEIGHTS)}
        (staging / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        _match_umask(staging)
        if folder.exists():  # another process finished first: keep theirs
            shutil.rmtree(staging)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    check_folder(folder, name)
    return folder


def check_folder(folder: Path, name: str) -> dict:
    """The folder's source record, after checking that its weights are the ones converted (sha256)."""
    try:
        record = json.loads((folder / SOURCE_RECORD).read_text())
        expected = record["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"the cached official AlignNet {folder} has a broken {SOURCE_RECORD} "
                              f"({first_line(exc)}): delete the folder and run `x2i fetch-aligner {name}`") from exc
    weights = folder / WEIGHTS
    if not weights.is_file() or sha256_of(weights) != expected:
        raise CheckpointError(f"the cached official AlignNet {folder} was changed or is corrupt (its weights are not "
                              f"the ones converted): delete the folder and run `x2i fetch-aligner {name}`")
    return record


def _match_umask(folder: Path) -> None:
    """mkdtemp makes 0700 folders: give the folder and its files the modes the user's umask asks for."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~mask)


class OfficialAligner:
    """Factory of registered official aligners: `from_pretrained(repo_id, filename=..., name=...)` -> AlignNet."""

    @classmethod
    def from_pretrained(cls, repo_id: str, *, filename: str, name: str, revision: str | None = None,
                        sha256: str | None = None, encoder: str | None = None, backbone: str | None = None,
                        torch_dtype=None, **_):
        """Prepare the converted folder (download and convert on first use) and load it."""
        from .alignnet import AlignNet

        folder = prepare(name, repo_id, filename, revision=revision, sha256=sha256, encoder=encoder, backbone=backbone)
        kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        return AlignNet.from_pretrained(str(folder), **kwargs)

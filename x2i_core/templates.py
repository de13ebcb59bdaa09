"""Shared steps of prompt templates that every encoder plugin needs: placeholder expansion."""
from __future__ import annotations

from typing import Sequence

from .errors import CheckpointError


def expand_placeholders(text: str, token: str, counts: Sequence[int]) -> str:
    """Repeat the i-th occurrence of `token` counts[i] times (one placeholder per image, video or audio clip
    becomes one token per feature the model inserts there), as HF processors do."""
    pieces = text.split(token)
    if len(pieces) - 1 != len(counts):
        raise CheckpointError(f"the chat template wrote {len(pieces) - 1} {token} placeholders for {len(counts)} inputs")
    return pieces[0] + "".join(token * n + piece for n, piece in zip(counts, pieces[1:]))

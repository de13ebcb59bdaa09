"""Capture the backbone's attention outputs with forward hooks, as plain functions.

Keys are "<kind>_<side>/<point name>", e.g. "double_image/transformer_blocks.0.attn": the part before
the slash is the term kind that per-kind weights address. A double point returns (image, text) (an
IP-Adapter processor may append more; ignored); a single point returns [text; image] along the
sequence and is split at the text length of the conditioning in use.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from ..interfaces import AttentionPoint


def term_key(kind: str, side: str, name: str) -> str:
    """'double', 'image', 'transformer_blocks.0.attn' -> 'double_image/transformer_blocks.0.attn'."""
    return f"{kind}_{side}/{name}"


def term_kind(key: str) -> str:
    """The per-kind weight name of a key: 'double_image/...' -> 'double_image'."""
    return key.split("/", 1)[0]


def split_output(point: AttentionPoint, output, text_length: int) -> dict[str, torch.Tensor]:
    """One attention module's output -> {key: (B, N, D) tensor} for its image and text sides."""
    if point.kind == "double":
        if not isinstance(output, (tuple, list)) or len(output) < 2:
            raise TypeError(f"{point.name}: a double attention point must return (image, text), got {type(output).__name__}")
        image, text = output[0], output[1]
    elif point.kind == "single":
        joint = output[0] if isinstance(output, (tuple, list)) else output
        text, image = joint[:, :text_length], joint[:, text_length:]
    else:
        raise ValueError(f"{point.name}: unknown attention point kind {point.kind!r}")
    return {term_key(point.kind, "image", point.name): image, term_key(point.kind, "text", point.name): text}


def register_capture_hooks(
    points: Sequence[AttentionPoint], store: dict[str, torch.Tensor], text_length: int,
    sides: Sequence[str] = ("image", "text"),
) -> list:
    """Add a forward hook per point that writes its split output into `store`; returns the hook handles."""
    handles = []
    for point in points:
        def hook(module, args, output, point=point):
            for key, tensor in split_output(point, output, text_length).items():
                if key.split("/", 1)[0].rsplit("_", 1)[1] in sides:
                    store[key] = tensor
        handles.append(point.module.register_forward_hook(hook))
    return handles


def remove_hooks(handles: Sequence) -> None:
    """Remove every handle (safe to call twice)."""
    for handle in handles:
        handle.remove()


@contextmanager
def captured_attention(
    points: Sequence[AttentionPoint], text_length: int, sides: Sequence[str] = ("image", "text"),
) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, forward passes fill the yielded dict; every hook is removed on exit, errors included."""
    store: dict[str, torch.Tensor] = {}
    handles = register_capture_hooks(points, store, text_length, sides)
    try:
        yield store
    finally:
        remove_hooks(handles)


def count_hooks(points: Sequence[AttentionPoint]) -> int:
    """How many forward hooks the points' modules carry (tests check that none are left behind)."""
    return sum(len(point.module._forward_hooks) for point in points)

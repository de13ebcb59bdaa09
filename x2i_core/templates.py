"""Shared steps of prompt templates that every encoder plugin needs: the chat-message list of a prompt (for the
checkpoint's own chat template) and placeholder expansion."""
from __future__ import annotations

from typing import Any, Sequence

from .errors import CheckpointError
from .prompt import MultimodalPrompt


def chat_messages(prompt: MultimodalPrompt, *, join_text: str = " ") -> list[dict[str, Any]]:
    """The dialogue as HF chat messages: [{"role": ..., "content": [{"type": "text", "text": ...},
    {"type": "image"}, {"type": "video"}, {"type": "audio"}, ...]}, ...], parts in the user's order.

    Media appear as placeholders only (a chat template writes one tag per item); load them from
    `prompt.media()`, which lists them in the same order. Consecutive text parts are joined with
    `join_text` (they read as one sentence); blank text parts are dropped.
    """
    messages = []
    for turn in prompt.turns:
        content: list[dict[str, Any]] = []
        for part in turn.parts:
            if part.modality != "text":
                content.append({"type": part.modality})
                continue
            text = str(part.value)
            if not text.strip():
                continue
            if content and content[-1]["type"] == "text":
                content[-1]["text"] += join_text + text
            else:
                content.append({"type": "text", "text": text})
        messages.append({"role": turn.role, "content": content})
    return messages


def expand_placeholders(text: str, token: str, counts: Sequence[int]) -> str:
    """Repeat the i-th occurrence of `token` counts[i] times (one placeholder per image, video or audio clip
    becomes one token per feature the model inserts there), as HF processors do."""
    pieces = text.split(token)
    if len(pieces) - 1 != len(counts):
        raise CheckpointError(f"the chat template wrote {len(pieces) - 1} {token} placeholders for {len(counts)} inputs")
    return pieces[0] + "".join(token * n + piece for n, piece in zip(counts, pieces[1:]))

"""Prompts in the user's order: inline media references in text, and chat-message JSON files.

    parse_inline("a cat like <image:dog.png> in the style of <image:art.jpg>")
        -> text "a cat like", image dog.png, text "in the style of", image art.jpg (in that order)

    load_prompt_file("dialogue.json")   # [{"role": "user", "content": [{"type": "text", "text": "..."},
                                        #   {"type": "image", "image": "dog.png"}, ...]}, ...]
        -> MultimodalPrompt: the last user turn is the current one, the turns before it its history

Relative media paths are relative to the file that names them (the JSON file's folder), or to `base`.
The same structure works through the API: `as_prompt` takes a MultimodalPrompt, a string (inline references
parsed) or a chat-message list. Plain data, no torch; media are not opened here (the encoder loads them).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from .errors import InputError
from .prompt import MODALITIES, ROLES, MultimodalPrompt, PromptPart, Turn

#: <image:PATH>, <video:PATH>, <audio:PATH>; PATH runs to the closing '>' (spaces allowed)
INLINE_REFERENCE = re.compile(r"<(image|video|audio):([^<>]+)>")
MEDIA = tuple(m for m in MODALITIES if m != "text")


def _media_path(value: str, base: Path | None) -> str:
    path = Path(value.strip()).expanduser()
    return str(path if path.is_absolute() or base is None else base / path)


def parse_inline(text: str, base: str | os.PathLike | None = None) -> list[PromptPart]:
    """The parts of a text with inline media references, in order; blank text between references is dropped."""
    base = Path(base) if base is not None else None
    parts: list[PromptPart] = []
    position = 0
    for match in INLINE_REFERENCE.finditer(text):
        before = text[position:match.start()].strip()
        if before:
            parts.append(PromptPart("text", before))
        if not match.group(2).strip():
            raise InputError(f"empty path in the inline reference {match.group(0)!r}")
        parts.append(PromptPart(match.group(1), _media_path(match.group(2), base)))
        position = match.end()
    rest = text[position:].strip() if parts else text
    if rest:
        parts.append(PromptPart("text", rest))
    return parts


def _content_parts(content: Any, base: Path | None, where: str) -> list[PromptPart]:
    """The parts of one message's content: a string (inline references parsed) or a list of typed items."""
    if isinstance(content, str):
        return parse_inline(content, base)
    if not isinstance(content, list):
        raise InputError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")
    parts = []
    for i, item in enumerate(content):
        if isinstance(item, str):
            parts.append(PromptPart("text", item))
            continue
        if not isinstance(item, dict):
            raise InputError(f"{where}, part {i}: expected an object like {{\"type\": \"text\", \"text\": ...}}")
        kind = item.get("type") or next((k for k in ("text", *MEDIA) if k in item), None)
        if kind not in MODALITIES:
            raise InputError(f"{where}, part {i}: unknown part type {kind!r} (use text, image, video or audio)")
        value = item.get(kind)
        if not isinstance(value, str) or (kind != "text" and not value.strip()):
            raise InputError(f"{where}, part {i}: a {kind} part needs a {kind!r} string"
                             + (" (a file path)" if kind != "text" else ""))
        parts.append(PromptPart(kind, value if kind == "text" else _media_path(value, base)))
    return parts


def prompt_from_messages(messages: Iterable[dict], base: str | os.PathLike | None = None,
                         source: str = "the messages") -> MultimodalPrompt:
    """A chat-message list (HF's format, media as paths) as a MultimodalPrompt: the last message must be the
    user's, and is the current turn; the ones before it are its history."""
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{source}: expected a non-empty list of chat messages ({{\"role\", \"content\"}})")
    base = Path(base) if base is not None else None
    turns = []
    for n, message in enumerate(messages):
        where = f"{source}, message {n}"
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise InputError(f"{where}: expected an object with \"role\" and \"content\"")
        if message["role"] not in ROLES:
            raise InputError(f"{where}: unknown role {message['role']!r} (use {', '.join(ROLES)})")
        turns.append(Turn(message["role"], tuple(_content_parts(message["content"], base, where))))
    if turns[-1].role != "user":
        raise InputError(f"{source}: the last message must be the user's (it is the prompt), not {turns[-1].role!r}")
    return MultimodalPrompt(turns[-1].parts, tuple(turns[:-1]))


def load_prompt_file(path: str | os.PathLike) -> MultimodalPrompt:
    """A prompt file: chat-message JSON (.json), else text with inline references; paths relative to the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"prompt file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read prompt file {path}: {type(exc).__name__}") from exc
    if path.suffix.lower() != ".json":
        return MultimodalPrompt(tuple(parse_inline(text.strip(), path.parent)))
    try:
        messages = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"prompt file {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    if isinstance(messages, dict) and "messages" in messages:  # {"messages": [...]}, as datasets often store it
        messages = messages["messages"]
    return prompt_from_messages(messages, path.parent, source=f"prompt file {path}")


def as_prompt(prompt: MultimodalPrompt | str | list) -> MultimodalPrompt:
    """A MultimodalPrompt from the API's prompt forms: one as is, a string (inline references parsed, relative to
    the working folder) or a chat-message list."""
    if isinstance(prompt, MultimodalPrompt):
        return prompt
    if isinstance(prompt, list):
        return prompt_from_messages(prompt)
    return MultimodalPrompt(tuple(parse_inline(str(prompt))))


def cli_prompt(text: str | None, images=(), videos=(), audios=(), prompt_file: str | None = None) -> MultimodalPrompt:
    """The prompt of `x2i generate`: a --prompt-file alone, or the media options first (in the order given) and
    then TEXT, whose inline <image:...>/<video:...>/<audio:...> references keep their place."""
    if prompt_file is not None:
        if text or images or videos or audios:
            raise InputError("give either --prompt-file or TEXT and --image/--video/--audio, not both")
        return load_prompt_file(prompt_file)
    media = MultimodalPrompt.build(None, images=images, videos=videos, audios=audios).parts
    return MultimodalPrompt((*media, *parse_inline(text or "")))

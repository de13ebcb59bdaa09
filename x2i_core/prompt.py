"""Prompts as conversations: MultimodalPrompt is the user's current turn (text, images, videos and audio
clips in the order given) plus the earlier turns of the dialogue (`history`: system, user and assistant
turns, oldest first). A one-shot prompt has no history.

Plain data, no torch: media stay as paths (or PIL images / arrays) until an encoder loads them.
`x2i_core.templates.chat_messages` renders a prompt into the chat-message list that HF chat templates take.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

Modality = Literal["text", "image", "video", "audio"]
MODALITIES: tuple[str, ...] = ("text", "image", "video", "audio")
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class PromptPart:
    """One piece of a prompt: its modality and its value (str for text; path, PIL image or array for media)."""

    modality: str
    value: Any

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; expected one of {MODALITIES}")

    def describe(self) -> str:
        """The text itself, or <image:name.png> for media (PNG metadata, logs)."""
        if self.modality == "text":
            return str(self.value)
        if isinstance(self.value, (str, Path)):
            return f"<{self.modality}:{Path(self.value).name}>"
        return f"<{self.modality}>"


@dataclass(frozen=True)
class Turn:
    """One turn of a dialogue: a role (system, user or assistant) and its ordered parts."""

    role: str
    parts: tuple[PromptPart, ...] = ()

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {ROLES}")

    @classmethod
    def text(cls, role: str, text: str) -> "Turn":
        """A turn holding one text part."""
        return cls(role, (PromptPart("text", text),))


@dataclass(frozen=True)
class MultimodalPrompt:
    """The current user turn (an ordered sequence of parts) and the dialogue before it (`history`)."""

    parts: tuple[PromptPart, ...] = field(default_factory=tuple)
    history: tuple[Turn, ...] = ()

    @property
    def turns(self) -> tuple[Turn, ...]:
        """The whole dialogue, oldest first, ending with the current user turn."""
        return (*self.history, Turn("user", self.parts))

    def followed_by(self, answer: str, parts: Iterable[PromptPart] = ()) -> "MultimodalPrompt":
        """The next prompt of a dialogue: this turn, the assistant's `answer` to it, then a new user turn."""
        history = (*self.turns, Turn.text("assistant", answer)) if answer else self.turns
        return MultimodalPrompt(tuple(parts), history)

    @classmethod
    def build(
        cls,
        text: str | None = None,
        images: Iterable[Any] = (),
        videos: Iterable[Any] = (),
        audios: Iterable[Any] = (),
    ) -> "MultimodalPrompt":
        """Media first (images, videos, audio clips), then the text: the order the CLI uses."""
        parts = [PromptPart("image", v) for v in images]
        parts += [PromptPart("video", v) for v in videos]
        parts += [PromptPart("audio", v) for v in audios]
        if text:
            parts.append(PromptPart("text", text))
        return cls(tuple(parts))

    @classmethod
    def from_text(cls, text: str) -> "MultimodalPrompt":
        """A text-only prompt."""
        return cls((PromptPart("text", text),))

    @classmethod
    def coerce(cls, prompt: "MultimodalPrompt | str") -> "MultimodalPrompt":
        """A prompt as is, or a string as a text-only prompt."""
        return prompt if isinstance(prompt, MultimodalPrompt) else cls.from_text(str(prompt))

    def of(self, modality: str) -> list[Any]:
        """The values of one modality, in order."""
        return [p.value for p in self.parts if p.modality == modality]

    @property
    def text(self) -> str:
        return " ".join(self.of("text"))

    @property
    def images(self) -> list[Any]:
        return self.of("image")

    @property
    def videos(self) -> list[Any]:
        return self.of("video")

    @property
    def audios(self) -> list[Any]:
        return self.of("audio")

    @property
    def modalities(self) -> set[str]:
        """Every modality used, earlier turns included (an encoder must read all of them)."""
        return {p.modality for turn in self.turns for p in turn.parts}

    def media(self) -> list[PromptPart]:
        """Every non-text part of the dialogue, in order (what an encoder loads)."""
        return [p for turn in self.turns for p in turn.parts if p.modality != "text"]

    def is_empty(self) -> bool:
        """True when there is no media and no non-blank text."""
        return not any(p.modality != "text" or str(p.value).strip() for p in self.parts)

    def describe(self) -> str:
        """Every part described, in order; earlier turns first, each as `[role] ...` (PNG metadata, logs)."""
        current = " ".join(p.describe() for p in self.parts)
        if not self.history:
            return current
        earlier = [f"[{t.role}] " + " ".join(p.describe() for p in t.parts) for t in self.history]
        return " ".join([*earlier, f"[user] {current}"])

"""MultimodalPrompt: text, images, videos and audio clips in the order the user gave them.

Plain data, no torch: media stay as paths (or PIL images / arrays) until an encoder loads them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

Modality = Literal["text", "image", "video", "audio"]
MODALITIES: tuple[str, ...] = ("text", "image", "video", "audio")


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
class MultimodalPrompt:
    """An ordered sequence of prompt parts."""

    parts: tuple[PromptPart, ...] = field(default_factory=tuple)

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
        return {p.modality for p in self.parts}

    def is_empty(self) -> bool:
        """True when there is no media and no non-blank text."""
        return not any(p.modality != "text" or str(p.value).strip() for p in self.parts)

    def describe(self) -> str:
        """Every part described, in order."""
        return " ".join(p.describe() for p in self.parts)

"""A multi-turn session: each turn the MLLM answers, and the image is conditioned on the dialogue so far.

    session = ChatSession(pipe, seed=0, steps=4)
    answer, images = session.send("a red circle")
    answer, images = session.send("now make it blue", media=["ref.png"])
    session.save("dialogue/")        # dialogue.json (chat messages, readable by --prompt-file) + turn-N.png

As the X2I reference's multi-turn mode, a turn's image reads the whole dialogue's prefill states (earlier
prompts and answers, then this prompt) plus the answer's tokens (capped at 64): `X2IPipeline(reason=True,
reason_with_prompt=True)` on the dialogue. `x2i chat` is a thin shell around this class.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import InputError
from .prompt import MultimodalPrompt, PromptPart, Turn
from .prompt_files import parse_inline
from .reasoning import CHAT_ANSWER_TOKENS, check_can_reason

_SUFFIX_MODALITY = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"), "image"),
    **dict.fromkeys((".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"), "video"),
    **dict.fromkeys((".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus", ".aac"), "audio"),
}


def media_part(value: Any) -> PromptPart:
    """A PromptPart as is, (modality, value), or a path whose suffix says its modality."""
    if isinstance(value, PromptPart):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return PromptPart(*value)
    modality = _SUFFIX_MODALITY.get(Path(str(value)).suffix.lower())
    if modality is None:
        raise InputError(f"cannot tell whether {value} is an image, a video or audio: pass (modality, path)")
    return PromptPart(modality, str(value))


@dataclass
class ChatTurn:
    """One finished turn: the user's parts, the answer, and the images drawn for it (with their seeds)."""

    parts: tuple[PromptPart, ...]
    answer: str
    images: list = field(default_factory=list)


class ChatSession:
    """A dialogue with an X2IPipeline whose encoder can answer (`supports_reply`)."""

    def __init__(self, pipe, *, seed: int = 0, answer_tokens: int = CHAT_ANSWER_TOKENS, **generate_options: Any):
        check_can_reason(pipe.encoder, answer_tokens)  # one line now, not after the first prompt
        self.pipe, self.answer_tokens, self.options = pipe, int(answer_tokens), generate_options
        self.next_seed = int(seed)
        self.history: tuple[Turn, ...] = ()
        self.turns: list[ChatTurn] = []

    def _draw(self, prompt: MultimodalPrompt) -> list:
        seed, self.next_seed = self.next_seed, self.next_seed + 1  # a new seed for every drawing, /again included
        return self.pipe(prompt, seed=seed, reason=True, reason_tokens=self.answer_tokens, reason_with_prompt=True,
                         **self.options)

    def send(self, text: str = "", media: Iterable[Any] = ()) -> tuple[str, list]:
        """One user turn (media first, then the text; inline <image:...> references keep their place): the
        answer and the images it conditions. The dialogue grows only when the turn succeeds."""
        parts = tuple([media_part(m) for m in media] + parse_inline(text or ""))
        prompt = MultimodalPrompt(parts, self.history)
        if prompt.is_empty():
            raise InputError("the message is empty: type some text or attach /image, /video or /audio")
        images = self._draw(prompt)
        answer = images[0].info.get("answer", "")
        self.history = (*prompt.turns, Turn.text("assistant", answer))
        self.turns.append(ChatTurn(parts, answer, list(images)))
        return answer, images

    def again(self) -> tuple[str, list]:
        """The last turn drawn again with a new seed (the greedy answer is the same)."""
        if not self.turns:
            raise InputError("nothing to draw again yet: send a message first")
        last = self.turns[-1]
        prompt = MultimodalPrompt(last.parts, self.history[:-2])  # the dialogue before the last user turn
        images = self._draw(prompt)
        last.images.extend(images)
        return last.answer, images

    def messages(self) -> list[dict]:
        """The dialogue as chat messages (the JSON format --prompt-file reads; media as absolute paths)."""
        out = []
        for turn in self.history:
            content = []
            for part in turn.parts:
                if part.modality == "text":
                    content.append({"type": "text", "text": str(part.value)})
                elif isinstance(part.value, (str, os.PathLike)):
                    content.append({"type": part.modality, part.modality: str(Path(part.value).expanduser().resolve())})
                else:  # in-memory media (PIL images, arrays) have no path to write
                    content.append({"type": "text", "text": part.describe()})
            out.append({"role": turn.role, "content": content})
        return out

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """dialogue.json and every turn's images (turn-N.png, turn-N-K.png for redraws); returns the paths."""
        from .generate import save_images

        folder = Path(folder).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "dialogue.json"]
        tmp = written[0].with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.messages(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, written[0])
        for n, turn in enumerate(self.turns, start=1):
            for k, image in enumerate(turn.images):
                written += save_images([image], folder / turn_image_name(n, k))
        return written


def turn_image_name(turn: int, redraw: int = 0) -> str:
    """turn-N.png for a turn's first image, turn-N-K.png for its K-th redraw."""
    return f"turn-{turn}.png" if redraw == 0 else f"turn-{turn}-{redraw}.png"

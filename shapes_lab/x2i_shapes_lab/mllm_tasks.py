"""What the shapes MLLM learns from: per scene, three views (image, English, German) each followed by a
task turn (describe in English / German, a question), plus image+instruction edits.

The first user turn of every example is exactly what Qwen25VLEncoder feeds at inference
("<|im_start|>user\\n{content}<|im_end|>\\n"), so its hidden states double as the views that the
contrastive loss pulls together.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from .world import (COLOURS, DE_BG, DE_COLOUR, DE_POS, DE_SHAPE, POSITIONS, SHAPES, BACKGROUNDS,
                    Scene, caption, caption_checks)

# German colour adjectives as the captions inflect them (Kreis takes -er, Quadrat and Dreieck -es)
DE_COLOUR_FORMS = {f"{stem}{ending}": colour for colour, stem in DE_COLOUR.items()
                   for ending in sorted({e for _, e in DE_SHAPE.values()})}

ASK_EN = ["describe it in english", "describe the image in english", "what do you see ? answer in english"]
ASK_DE = ["beschreibe es auf deutsch", "beschreibe das bild auf deutsch", "was siehst du ? antworte auf deutsch"]
QUESTIONS = {  # attribute -> (english question, german question)
    "colour": ("what colour is the shape ?", "welche farbe hat die form ?"),
    "shape": ("what shape is it ?", "welche form ist es ?"),
    "position": ("where is the shape ?", "wo ist die form ?"),
    "size": ("is it small or large ?", "ist es klein oder groß ?"),
    "background": ("what colour is the background ?", "welche farbe hat der hintergrund ?"),
}
DE_SIZE_WORD = {"small": "klein", "large": "groß"}


def edit_instruction(scene: Scene, rng: random.Random, lang: str) -> tuple[str, Scene]:
    """A one-shape edit ("make it blue", "mach es blau") and the edited scene."""
    s = scene.shapes[0]
    kind = rng.choice(["colour", "colour", "shape", "size", "position", "background"])
    if kind == "colour":
        new = rng.choice([c for c in COLOURS if c != s.colour])
        text = f"make it {new}" if lang == "en" else f"mach es {DE_COLOUR[new]}"
        edited = replace(scene, shapes=(replace(s, colour=new),))
    elif kind == "shape":
        new = rng.choice([x for x in SHAPES if x != s.shape])
        noun, ending = DE_SHAPE[new]
        text = f"make it a {new}" if lang == "en" else f"mach {'einen' if ending == 'er' else 'ein'} {noun} daraus"
        edited = replace(scene, shapes=(replace(s, shape=new),))
    elif kind == "size":
        new = "large" if s.size == "small" else "small"
        text = f"make it {new}" if lang == "en" else f"mach es {DE_SIZE_WORD[new]}"
        edited = replace(scene, shapes=(replace(s, size=new),))
    elif kind == "position":
        new = rng.choice([p for p in POSITIONS if p != s.position])
        text = f"move it to the {new}" if lang == "en" else f"verschiebe es nach {DE_POS[new][0]}"
        edited = replace(scene, shapes=(replace(s, position=new),))
    else:
        new = rng.choice([b for b in BACKGROUNDS if b != scene.background])
        text = f"make the background {new}" if lang == "en" else f"mach den hintergrund {DE_BG[new]}"
        edited = replace(scene, background=new)
    return text, edited


def answer(scene: Scene, attribute: str, lang: str) -> str:
    """The short answer to a question about a one-shape scene."""
    s = scene.shapes[0]
    if attribute == "colour":
        return s.colour if lang == "en" else DE_COLOUR[s.colour]
    if attribute == "shape":
        return s.shape if lang == "en" else DE_SHAPE[s.shape][0]
    if attribute == "position":
        return s.position if lang == "en" else DE_POS[s.position][0]
    if attribute == "size":
        return s.size if lang == "en" else DE_SIZE_WORD[s.size]
    return scene.background if lang == "en" else DE_BG[scene.background]


@dataclass
class Example:
    """One training dialogue: first turn (image and/or text), a task turn, the answer; `group` ties views."""

    image: Scene | None
    text: str
    task: str
    answer: str
    group: int  # index of the scene whose meaning the first turn carries (for the contrastive loss)
    view: str  # "image", "en", "de", "edit"
    meaning: Scene | None = None  # the scene the first turn describes (for an edit: the edited scene)


def scene_examples(scene: Scene, group: int, rng: random.Random, edited_group: int | None = None,
                   edit: tuple[str, Scene] | None = None) -> list[Example]:
    """Image, English and German views of one scene, each with a random task; plus an edit if given."""
    seed = rng.randrange(1 << 30)
    full = rng.random() < 0.4
    en = caption(scene, "en", random.Random(seed), full=full)
    de = caption(scene, "de", random.Random(seed), full=full)  # same attribute subset as `en`
    en_full, de_full = caption(scene, "en", full=True), caption(scene, "de", full=True)
    single = len(scene.shapes) == 1
    out = []
    for view, text, mentioned in (("image", "", None), ("en", en, caption_checks(scene, en)),
                                  ("de", de, caption_checks(scene, de))):
        choices = ["en", "de"] + (["qa"] if single else [])
        kind = rng.choice(choices)
        if kind == "qa":
            attrs = [a for a in QUESTIONS if mentioned is None or a in mentioned]
            attr, lang = rng.choice(attrs), rng.choice(["en", "de"])
            task, ans = QUESTIONS[attr][lang == "de"], answer(scene, attr, lang)
        elif kind == "en":
            task, ans = rng.choice(ASK_EN), en_full if view == "image" else en
        else:
            task, ans = rng.choice(ASK_DE), de_full if view == "image" else de
        out.append(Example(scene if view == "image" else None, text, task, ans, group, view, scene))
    if edit is not None and single:
        text, edited = edit
        lang = rng.choice(["en", "de"])
        task = rng.choice(ASK_EN if lang == "en" else ASK_DE)
        out.append(Example(scene, text, task, caption(edited, lang, full=True), edited_group, "edit", edited))
    return out


def word_examples(rng: random.Random, n: int, first_group: int) -> list[Example]:
    """n dictionary pairs: an inflected German colour word and its English word, each translated.

    Why: German inflects the colour by the noun's gender and "Kreis" is the only masculine noun, so
    "gelber" occurs only in "gelber Kreis", a held-out pair: without these pairs the MLLM would never see
    that word at all. A word alone names no colour+shape pair, so nothing held out is shown.
    """
    out = []
    for _ in range(n):
        de, en = rng.choice(sorted(DE_COLOUR_FORMS.items()))
        group = first_group + list(COLOURS).index(en)  # one group per colour: the same word twice is no negative
        out.append(Example(None, en, "translate into german", DE_COLOUR[en], group, "en"))
        out.append(Example(None, de, "übersetze ins englische", en, group, "de"))
    return out

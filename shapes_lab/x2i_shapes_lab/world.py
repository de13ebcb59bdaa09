"""The shapes world: 64x64 scenes of one or two flat shapes, captions in English and German.

Everything is a pure function of a seed. A fixed set of colour+shape pairs is HELD OUT: no scene that
training draws (VAE, teacher, MLLM, alignment) contains one; evaluation prompts use them to test
composition.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
COLOURS = {  # name -> RGB; far from each other and from every background
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 30),
    "purple": (150, 50, 200),
    "orange": (250, 140, 20),
}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 7, "large": 12}  # half extent in pixels
POSITIONS = {
    "top left": (16, 16), "top right": (48, 16), "bottom left": (16, 48),
    "bottom right": (48, 48), "center": (32, 32),
}
CORNERS = ("top left", "top right", "bottom left", "bottom right")
# Colour+shape pairs never seen in training (one per shape, one per colour at most).
HELD_OUT = frozenset({("blue", "triangle"), ("yellow", "circle"), ("purple", "square")})


@dataclass(frozen=True)
class Shape:
    """One object of a scene."""

    shape: str
    colour: str
    size: str
    position: str
    jitter: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Scene:
    """A background and one or two shapes (two only at distinct corners, so they never overlap)."""

    background: str
    shapes: tuple[Shape, ...]

    def is_held_out(self) -> bool:
        return any((s.colour, s.shape) in HELD_OUT for s in self.shapes)


def _random_shape(rng: random.Random, position: str, held_out: bool | None) -> Shape:
    while True:
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        if held_out is None or ((colour, shape) in HELD_OUT) == held_out:
            break
    jitter = (rng.randint(-2, 2), rng.randint(-2, 2))
    return Shape(shape, colour, rng.choice(list(SIZES)), position, jitter)


def sample_scene(rng: random.Random, *, split: str = "train", two_prob: float = 0.3) -> Scene:
    """A random scene. split "train": no held-out pair; "heldout": one shape of a held-out pair; "any"."""
    background = rng.choice(list(BACKGROUNDS))
    if split == "heldout":
        return Scene(background, (_random_shape(rng, rng.choice(list(POSITIONS)), True),))
    held = False if split == "train" else None
    if rng.random() < two_prob:
        a, b = rng.sample(CORNERS, 2)
        shapes = (_random_shape(rng, a, held), _random_shape(rng, b, held))
    else:
        shapes = (_random_shape(rng, rng.choice(list(POSITIONS)), held),)
    return Scene(background, shapes)


def scenes(seed: int, n: int, *, split: str = "train", two_prob: float = 0.3) -> list[Scene]:
    """n scenes drawn deterministically from `seed`."""
    rng = random.Random(seed)
    return [sample_scene(rng, split=split, two_prob=two_prob) for _ in range(n)]


def shape_polygon(shape: Shape) -> tuple[str, list[tuple[float, float]]]:
    """("ellipse" | "polygon", points) of a shape in pixel coordinates."""
    cx, cy = POSITIONS[shape.position]
    cx, cy = cx + shape.jitter[0], cy + shape.jitter[1]
    r = SIZES[shape.size]
    if shape.shape == "circle":
        return "ellipse", [(cx - r, cy - r), (cx + r, cy + r)]
    if shape.shape == "square":
        return "polygon", [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return "polygon", [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]


def render(scene: Scene) -> Image.Image:
    """The scene as a crisp 64x64 RGB image."""
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for s in scene.shapes:
        kind, pts = shape_polygon(s)
        fill = COLOURS[s.colour]
        if kind == "ellipse":
            draw.ellipse(pts, fill=fill)
        else:
            draw.polygon(pts, fill=fill)
    return img


def render_array(scene: Scene) -> np.ndarray:
    """(64, 64, 3) uint8."""
    return np.asarray(render(scene), dtype=np.uint8)


# -- captions -------------------------------------------------------------------------------------
EN_POS = {
    "top left": ["at the top left", "in the top left corner", "in the top left"],
    "top right": ["at the top right", "in the top right corner", "in the top right"],
    "bottom left": ["at the bottom left", "in the bottom left corner", "in the bottom left"],
    "bottom right": ["at the bottom right", "in the bottom right corner", "in the bottom right"],
    "center": ["in the center", "in the middle", "at the center"],
}
EN_SIZE = {"small": ["small", "little"], "large": ["large", "big"]}
DE_COLOUR = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett",
             "orange": "orangefarben"}
DE_SHAPE = {"circle": ("Kreis", "er"), "square": ("Quadrat", "es"), "triangle": ("Dreieck", "es")}
DE_SIZE = {"small": "klein", "large": "groß"}
DE_BG = {"white": "weiß", "black": "schwarz", "gray": "grau"}
DE_POS = {
    "top left": ["oben links", "links oben"], "top right": ["oben rechts", "rechts oben"],
    "bottom left": ["unten links", "links unten"], "bottom right": ["unten rechts", "rechts unten"],
    "center": ["in der Mitte", "in der Bildmitte"],
}


def _en_object(s: Shape, rng: random.Random, with_size: bool, full: bool = False) -> str:
    size = (EN_SIZE[s.size][0] if full else rng.choice(EN_SIZE[s.size])) + " " if with_size else ""
    words = f"{size}{s.colour} {s.shape}"
    return ("an " if words[0] in "aeiou" else "a ") + words


def _de_object(s: Shape, rng: random.Random, with_size: bool) -> str:
    noun, ending = DE_SHAPE[s.shape]
    size = DE_SIZE[s.size] + ending + " " if with_size else ""
    return f"ein{'' if ending == 'er' else 's'} {size}{DE_COLOUR[s.colour]}{ending} {noun}".replace("eins ", "ein ")


def caption(scene: Scene, lang: str = "en", rng: random.Random | None = None, *, full: bool = False) -> str:
    """A caption from the grammar; `full` gives the canonical one naming every attribute."""
    rng = rng or random.Random(0)
    keep = (lambda p: True) if full else (lambda p: rng.random() < p)
    with_size, with_pos, with_bg = keep(0.6), keep(0.6), keep(0.5)
    if lang == "en":
        obj = lambda s: _en_object(s, rng, with_size, full)
        pos = lambda s: " " + (EN_POS[s.position][0] if full else rng.choice(EN_POS[s.position]))
        bg = (f" on a {scene.background} background" if full or rng.random() < 0.7
              else f" on {scene.background}")
        joiner = " and "
    elif lang == "de":
        obj = lambda s: _de_object(s, rng, with_size)
        pos = lambda s: " " + (DE_POS[s.position][0] if full else rng.choice(DE_POS[s.position]))
        bg = f" auf {DE_BG[scene.background]}em Hintergrund"
        joiner = " und "
    else:
        raise ValueError(f"unknown language {lang!r}")
    parts = [obj(s) + (pos(s) if with_pos else "") for s in scene.shapes]
    return joiner.join(parts) + (bg if with_bg else "")


def caption_checks(scene: Scene, text: str) -> set[str]:
    """Which attributes a caption names (a full caption names all): used to score only what was asked."""
    words = text.lower()
    checks = {"colour", "shape"}
    if any(w in words for w in ("small", "little", "large", "big", "klein", "groß")):
        checks.add("size")
    if any(w in words for w in ("top", "bottom", "center", "middle", "oben", "unten", "mitte")):
        checks.add("position")
    if "background" in words or "hintergrund" in words or any(f"on {b}" in words for b in BACKGROUNDS):
        checks.add("background")
    return checks

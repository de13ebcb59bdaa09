"""Object-level targets for the MLLM's image tokens: which word of the scene's full English caption each
image-prompt token should stand for, from where the objects are in the image.

Why: the teacher reads text tokens as a set (FLUX gives them no positions), so an image prompt transfers
through a text-only AlignNet when its token states are, as a set, the caption's token states. The Chamfer
term let image tokens settle on any English token ("a", "on", "background": `x2i shapes probe`), and
optimal transport leaves the choice of partner to the current states. Here the partner is fixed by the
scene: the 16 image tokens are a 4x4 grid of 16x16-pixel cells (Qwen merges 2x2 patches of 8 pixels, in
raster order), the cells an object covers take that object's words in raster order (shape first, then
colour, size and position; words left over go to the free cells nearest the object), the other cells take
the rest of the caption (background colour first), so every caption word has an image token that stands
for it.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .world import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZE, SIZES, Scene, shape_polygon

GRID = 4  # image tokens per side for a 64x64 image: 8-pixel patches, 2x2 merged
POSITION_WORDS = {w for p in POSITIONS for w in p.split()}
SIZE_WORDS = set(SIZES)  # full captions use the canonical size word
ROLE_ORDER = ("shape", "colour", "size", "position")  # what an object's cells stand for, most important first


def cell_coverage(scene: Scene, grid: int = GRID) -> np.ndarray:
    """(shapes, grid * grid): the fraction of each cell (raster order) that each shape covers."""
    out = []
    for s in scene.shapes:
        mask = Image.new("L", (SIZE, SIZE), 0)
        kind, pts = shape_polygon(s)
        draw = ImageDraw.Draw(mask)
        (draw.ellipse if kind == "ellipse" else draw.polygon)(pts, fill=1)
        cell = SIZE // grid
        m = np.asarray(mask, dtype=np.float32).reshape(grid, cell, grid, cell)
        out.append(m.mean((1, 3)).reshape(-1))
    return np.stack(out) if out else np.zeros((0, grid * grid), np.float32)


def caption_word_roles(words: list[str], n_shapes: int) -> list[tuple[str, int]]:
    """(role, shape index or -1) for each word of a full English caption ("a small red circle at the top
    left and ... on a white background"): roles shape, colour, size, position, background (the background
    colour and the word "background") and function (everything else)."""
    bg_start = max(i for i, w in enumerate(words) if w == "on")  # " on a <colour> background" ends every caption
    roles, k = [], 0
    for i, w in enumerate(words):
        if i >= bg_start:
            roles.append(("background" if w in BACKGROUNDS or w == "background" else "function", -1))
        elif w == "and":
            roles.append(("function", -1))
            k += 1
        elif w in SHAPES:
            roles.append(("shape", k))
        elif w in COLOURS:
            roles.append(("colour", k))
        elif w in SIZE_WORDS:
            roles.append(("size", k))
        elif w in POSITION_WORDS:
            roles.append(("position", k))
        else:
            roles.append(("function", -1))
    if k != n_shapes - 1:
        raise ValueError(f"caption names {k + 1} objects, the scene has {n_shapes}: {' '.join(words)}")
    return roles


def object_assignment(scene: Scene, image_tokens: list[str], caption_tokens: list[str],
                      cell_order: str = "first", words_once: bool = False) -> list[int]:
    """For each first-turn token of the image prompt of `scene` (template, <|vision_start|>, the image
    tokens, <|vision_end|>, template), the index of the first-turn token of the scene's full English
    caption whose state it should take. The template before the image is shared token for token;
    <|vision_start|> takes the caption's first word, <|vision_end|> its last ("background").

    cell_order "first": an object's cells take its words in raster order, so its first cell stands for the
    shape. "last": in reverse raster order, so its LAST cell stands for the shape. Why: the language model
    is causal, so only the object's last cell can attend to all of the object; the first cell sees the
    object only through the two-layer vision tower.

    words_once: every caption word but the background's goes to one cell only; cells left over take the
    background colour and "background". Why: with words repeated over the cells, one-object image prompts gave
    the wrong number of objects (`x2i shapes eval`: the count right in only 26-36%), mostly extra copies of the object (the
    teacher reads a repeated "triangle" as more triangles), while a repeated background word still means one
    background."""
    if cell_order not in ("first", "last"):
        raise ValueError(f"cell_order must be 'first' or 'last', got {cell_order!r}")
    start, end = image_tokens.index("<|vision_start|>"), image_tokens.index("<|vision_end|>")
    tail = len(image_tokens) - end - 1
    first, last = start, len(caption_tokens) - tail  # caption words: caption_tokens[first:last]
    if image_tokens[:start] != caption_tokens[:start] or image_tokens[end + 1:] != caption_tokens[last:]:
        raise ValueError("the image prompt and the caption do not share the chat template")
    cells = end - start - 1
    if cells != GRID * GRID:
        raise ValueError(f"expected {GRID * GRID} image tokens (a 64x64 image), got {cells}")
    roles = caption_word_roles(caption_tokens[first:last], len(scene.shapes))
    coverage = cell_coverage(scene)

    def words_of(shape: int) -> list[int]:
        return [first + i for r in ROLE_ORDER for i, (role, k) in enumerate(roles) if role == r and k == shape]

    target = [-1] * cells
    rows, cols = np.divmod(np.arange(cells), GRID)
    for k in range(len(scene.shapes)):
        # every cell with a pixel of the object is its own, taken in raster order: both are plain to see in
        # the patches. Ranking cells by coverage was tried first: an object's cells often cover nearly equal
        # shares, so which cell stood for the shape was hard to see, and the probe found no image token
        # standing for the shape.
        own = [c for c in range(cells) if coverage[k, c] > 0]
        if cell_order == "last":
            own.reverse()
        words = words_of(k)
        for j, c in enumerate(own):
            if j < len(words) or not words_once:
                target[c] = words[j % len(words)]
        # an object on fewer cells than it has words: the rest go to the free cells nearest to it
        w = coverage[k] / coverage[k].sum()
        distance = (rows - (w * rows).sum()) ** 2 + (cols - (w * cols).sum()) ** 2
        near = [c for c in np.argsort(distance, kind="stable") if target[c] < 0]
        for word, c in zip(words[len(own):], near):
            target[c] = word
    rest = [first + i for i, (role, _) in enumerate(roles) if role == "background"]
    rest += [first + i for i, (role, _) in enumerate(roles) if role == "function"]
    background = rest[:sum(role == "background" for role, _ in roles)]
    free = [c for c in range(cells) if target[c] < 0]
    for j, c in enumerate(free):
        if j < len(rest) or not words_once:
            target[c] = rest[j % len(rest)]
        else:
            target[c] = background[(j - len(rest)) % len(background)]
    return list(range(start)) + [first] + target + [last - 1] + list(range(last, last + tail))


def object_regression(hidden_states, first_turn, assignments: dict[int, list[int]],
                      targets: dict[int, torch.Tensor]) -> torch.Tensor:
    """Mean squared distance, at every layer, between each image example's first-turn token states and the
    caption token states `object_assignment` gives them (`targets[i]`: layers, caption tokens, hidden,
    without gradient), divided by the caption states' mean squared norm so that every layer counts alike."""
    states = torch.stack(hidden_states)  # (layers, batch, seq, hidden)
    terms = []
    for i, index in assignments.items():
        a = states[:, i, first_turn[i]].float()
        b = targets[i].float()
        scale = b.pow(2).sum(-1).mean(-1).clamp_min(1e-6)  # (layers,)
        terms.append((a - b[:, index]).pow(2).sum(-1).mean(-1) / scale)
    return torch.cat(terms).mean() if terms else states.new_zeros(())

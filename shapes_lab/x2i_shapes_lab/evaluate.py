"""Read a generated shapes-world image back into attributes and score it against the asked scene.

Background = the most common border colour; objects = connected components of pixels far from it;
for each: colour = nearest palette entry of its median colour, shape = filled top corners of its bounding box
(square) or its fill ratio (circle ~0.79, triangle ~0.5), size = bounding-box extent, position = nearest anchor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import BACKGROUNDS, COLOURS, POSITIONS, SIZES, Scene

ATTRIBUTES = ("colour", "shape", "size", "position", "background")
MIN_PIXELS = 20  # smaller blobs are noise (a small circle covers ~150 pixels)


@dataclass
class Found:
    """One object read from an image."""

    colour: str
    shape: str
    size: str
    position: str
    pixels: int
    fill: float


def _nearest(rgb: np.ndarray, palette: dict) -> str:
    names = list(palette)
    d = [np.sum((rgb - np.array(palette[n], dtype=float)) ** 2) for n in names]
    return names[int(np.argmin(d))]


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a bool mask, as arrays of (y, x) (iterative flood fill, no scipy)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    comps = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, pts = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pts.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        comps.append(np.array(pts))
    return comps


def _midpoint_region(img, ys, xs, obj_rgb, bg_rgb, pad: int = 3):
    """Re-segment around a blob: pixels nearer the object's colour than the background's (a threshold halfway
    between them keeps a blurred shape's true outline); the largest connected part, in image coordinates."""
    y0, y1 = max(0, ys.min() - pad), min(img.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(img.shape[1], xs.max() + pad + 1)
    sub = img[y0:y1, x0:x1]
    near = ((sub - obj_rgb) ** 2).sum(-1) < ((sub - bg_rgb) ** 2).sum(-1)
    parts = _components(near)
    if not parts:
        return ys, xs
    best = max(parts, key=len)
    return best[:, 0] + y0, best[:, 1] + x0


def classify_shape(box: np.ndarray, fill: float) -> str:
    """Square if its top corners are filled (robust to the VAE's blur), else circle vs triangle by fill ratio."""
    h, w = box.shape
    ch, cw = max(1, round(0.25 * h)), max(1, round(0.25 * w))
    corners = (box[:ch, :cw].mean() + box[:ch, -cw:].mean()) / 2
    if corners > 0.5:
        return "square"
    return "circle" if fill > 0.68 else "triangle"


def read_background(img: np.ndarray) -> str:
    """Nearest background name of the median border colour."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).astype(float)
    return _nearest(np.median(border, axis=0), BACKGROUNDS)


def find_shapes(img: np.ndarray, threshold: float = 60.0) -> tuple[str, list[Found]]:
    """(background name, objects largest first) of a (H, W, 3) uint8 image."""
    img = np.asarray(img)[..., :3].astype(float)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg_rgb = np.median(border, axis=0)
    mask = np.sqrt(((img - bg_rgb) ** 2).sum(-1)) > threshold
    found = []
    for pts in _components(mask):
        if len(pts) < MIN_PIXELS:
            continue
        ys, xs = pts[:, 0], pts[:, 1]
        colour_rgb = np.median(img[ys, xs], axis=0)
        ys, xs = _midpoint_region(img, ys, xs, colour_rgb, bg_rgb)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        fill = len(pts) / float(h * w)
        box = np.zeros((h, w), dtype=bool)
        box[ys - ys.min(), xs - xs.min()] = True
        shape = classify_shape(box, fill)
        extent = max(h, w)
        size = "small" if extent < SIZES["small"] + SIZES["large"] + 1 else "large"
        cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
        colour = _nearest(colour_rgb, COLOURS)
        found.append(Found(colour, shape, size, position, len(ys), fill))
    found.sort(key=lambda f: -f.pixels)
    return _nearest(bg_rgb, BACKGROUNDS), found


def score(img: np.ndarray, scene: Scene, checks=ATTRIBUTES) -> dict[str, bool]:
    """Per-attribute correctness of an image against the scene it should show (only `checks` count).

    Each asked shape is matched to the found object with most attributes in common; an image with a
    different number of objects fails every object attribute. "all" = every checked attribute right;
    "objects" = the number of objects is right (already part of "all"; it tells a wrong count from wrong
    attributes).
    """
    background, found = find_shapes(img)
    result = {}
    if "background" in checks:
        result["background"] = background == scene.background
    obj_checks = [a for a in ATTRIBUTES if a != "background" and a in checks]
    per_attr = {a: True for a in obj_checks}
    if len(found) != len(scene.shapes):
        per_attr = {a: False for a in obj_checks}
    else:
        pool = list(found)
        for want in scene.shapes:
            best = max(pool, key=lambda f: sum(getattr(f, a) == getattr(want, a) for a in obj_checks))
            pool.remove(best)
            for a in obj_checks:
                per_attr[a] &= getattr(best, a) == getattr(want, a)
    result.update(per_attr)
    result["all"] = all(result.values())
    result["objects"] = len(found) == len(scene.shapes)
    return result


def summarise(results: list[dict[str, bool]]) -> dict[str, float]:
    """Accuracy per attribute (over the images where it was checked) and all-correct."""
    keys = [a for a in (*ATTRIBUTES, "all", "objects") if any(a in r for r in results)]
    return {k: float(np.mean([r[k] for r in results if k in r])) for k in keys}


def format_summary(summary: dict[str, float], n: int) -> str:
    """One line: n images, per-attribute accuracy, all-correct."""
    return f"n={n} " + " ".join(f"{k}={v:.1%}" for k, v in summary.items())

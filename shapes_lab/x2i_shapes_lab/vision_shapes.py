"""A shape-classification term for the MLLM's vision tower, on shapes drawn in colours OUTSIDE the palette.

Why: a linear read-out of the shipped MLLM's image-prompt states (`x2i shapes probe`, shape_readout: fit on
red, green and orange shapes, where colour says nothing about shape) finds the shape of seen blue, yellow
and purple pairs (up to 99%) but not of the held-out ones (26-60%, chance 33%). Trained on the training pairs only, the vision tower learned shape
together with colour, so a held-out pair (a purple square) has no shape to transfer. A real MLLM's vision
encoder is pretrained on far more varied images than the pairs it is later tuned on; this term is that
pretraining in miniature: one- or two-shape scenes in random colours far from every palette and background
colour, so that no held-out pair (nor anything close to one) is drawn, and the tower must see shape apart
from colour. A linear head on the mean of each image's merged tokens names the shapes present.
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .encoder_inputs import image_patches
from .world import BACKGROUNDS, COLOURS, CORNERS, POSITIONS, SHAPES, SIZE, SIZES, Shape, shape_polygon

MIN_COLOUR_DISTANCE = 80.0  # RGB distance from every palette and background colour


def off_palette_colour(rng: random.Random) -> tuple[int, int, int]:
    """A random RGB colour at least MIN_COLOUR_DISTANCE from every named colour of the world."""
    named = list(COLOURS.values()) + list(BACKGROUNDS.values())
    while True:
        c = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        if min(math.dist(c, p) for p in named) >= MIN_COLOUR_DISTANCE:
            return c


def off_palette_scene(rng: random.Random, two_prob: float = 0.3) -> tuple[Image.Image, list[str]]:
    """A 64x64 image of one or two shapes in off-palette colours on a world background, and its shapes."""
    if rng.random() < two_prob:
        positions = rng.sample(CORNERS, 2)
    else:
        positions = [rng.choice(list(POSITIONS))]
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[rng.choice(list(BACKGROUNDS))])
    draw = ImageDraw.Draw(img)
    kinds = []
    for pos in positions:
        # the colour name is a placeholder: shape_polygon reads only shape, size and position
        s = Shape(rng.choice(SHAPES), "red", rng.choice(list(SIZES)), pos, (rng.randint(-2, 2), rng.randint(-2, 2)))
        kind, pts = shape_polygon(s)
        (draw.ellipse if kind == "ellipse" else draw.polygon)(pts, fill=off_palette_colour(rng))
        kinds.append(s.shape)
    return img, kinds


def vision_shape_loss(model, enc, head: torch.nn.Linear, rng: random.Random, n: int) -> torch.Tensor:
    """Multi-label cross-entropy of `head` on the mean merged vision tokens of n off-palette scenes."""
    images, labels = zip(*(off_palette_scene(rng) for _ in range(n)))
    patches = [image_patches(enc, im) for im in images]
    pixel_values = torch.from_numpy(np.concatenate([p for p, _ in patches]))
    grid = torch.tensor([g for _, g in patches], dtype=torch.long)
    merged = model.model.visual(pixel_values, grid_thw=grid).pooler_output  # (tokens of all images, hidden)
    pooled = merged.reshape(n, -1, merged.shape[-1]).mean(1)  # every image has the same token count
    target = torch.tensor([[float(s in kinds) for s in SHAPES] for kinds in labels])
    return F.binary_cross_entropy_with_logits(head(pooled.float()), target)

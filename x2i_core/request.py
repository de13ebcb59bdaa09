"""GenerationRequest: everything one generation asks for, as one plain value (no torch), checked before models load.

X2IPipeline fills in the backbone's defaults and hands the request to the backbone's one sampling loop; adapters
read their own inputs from it (a ControlNet its control images, an IP-Adapter its reference images, a third-party
adapter anything under `inputs[its name]`), so a new adapter plugin needs no new field here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import InputError

#: a file path or a PIL image
ImageLike = Any


@dataclass
class AdapterChoice:
    """An adapter to load: a registered adapter name, its checkpoint (file, folder or hub id), a scale, options."""

    name: str
    pretrained: str | None = None
    scale: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, name: str, value: str, **options) -> "AdapterChoice":
        """`FILE_OR_DIR[:SCALE]` (the CLI form of --lora): a trailing `:number` is the scale, else it is 1."""
        path, sep, tail = value.rpartition(":")
        if sep and path:
            try:
                return cls(name, path, float(tail), dict(options))
            except ValueError:
                pass  # a colon inside the path itself (C:\\..., hub revisions): no scale given
        return cls(name, value, 1.0, dict(options))

    def describe(self) -> str:
        """How PNG metadata names it: `name:checkpoint@scale`."""
        return f"{self.name}:{self.pretrained}@{self.scale:g}" if self.pretrained else f"{self.name}@{self.scale:g}"


def parse_outpaint(value: str) -> tuple[int, int, int, int]:
    """`L,T,R,B` pixels (non-negative integers, at least one above zero) -> a tuple; InputError otherwise."""
    parts = [p.strip() for p in str(value).split(",")]
    try:
        margins = tuple(int(p) for p in parts)
    except ValueError:
        margins = ()
    if len(margins) != 4 or min(margins) < 0 or max(margins) == 0:
        raise InputError(f"--outpaint takes four non-negative pixel margins LEFT,TOP,RIGHT,BOTTOM (e.g. 0,0,256,0), got {value!r}")
    return margins  # type: ignore[return-value]


@dataclass
class GenerationRequest:
    """One generation: prompt, size, sampling settings, seeds, and the inputs of images that enter the DiT.

    None means "the backbone's default" (steps, guidance, true CFG, size). With an init image and no size, the
    size is the init image's (plus the outpaint margins), rounded down to the backbone's size multiple.
    `strength` (0, 1] is how much of the schedule runs from the noised init image: None = 1 with a mask or
    outpainting, 0.8 for plain img2img. Mask: white = repaint, same size as the init image.
    """

    prompt: Any = ""  # MultimodalPrompt or str: what the encoder reads
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    true_cfg: float | None = None
    seed: int = 0
    num_images: int = 1
    init_image: ImageLike | None = None
    strength: float | None = None
    mask: ImageLike | None = None
    outpaint: tuple[int, int, int, int] | None = None
    control_images: list[ImageLike] = field(default_factory=list)
    control_modes: list[int | None] = field(default_factory=list)
    control_scales: list[float] = field(default_factory=list)
    reference_images: list[ImageLike] = field(default_factory=list)
    #: adapter name -> scale for this request (overrides the scale it was loaded with, where the adapter allows)
    adapter_scales: dict[str, float] = field(default_factory=dict)
    #: adapter name -> whatever that adapter reads (for adapters that need no field of their own)
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        """Image i is seeded with seed + i."""
        return [self.seed + i for i in range(self.num_images)]

    def effective_strength(self) -> float:
        """The strength to run: the given one, else 1 with a mask or outpainting, else 0.8."""
        if self.strength is not None:
            return float(self.strength)
        return 1.0 if (self.mask is not None or self.outpaint) else 0.8

    def with_defaults(self, **values) -> "GenerationRequest":
        """A copy with the None fields among `values` filled in."""
        return replace(self, **{k: v for k, v in values.items() if getattr(self, k) is None})

    def check(self) -> None:
        """Cheap checks that need no model: strength range, margins, init image and mask files and their sizes."""
        if self.num_images < 1:
            raise InputError(f"the number of images must be at least 1, got {self.num_images}")
        if self.strength is not None and not 0 < float(self.strength) <= 1:
            raise InputError(f"--strength must be in (0, 1], got {self.strength:g}")
        needs_init = [opt for opt, val in (("--strength", self.strength), ("--mask", self.mask),
                                           ("--outpaint", self.outpaint)) if val is not None]
        if needs_init and self.init_image is None:
            raise InputError(f"{' and '.join(needs_init)} need(s) an --init-image")
        if self.outpaint is not None:
            self.outpaint = parse_outpaint(",".join(str(int(m)) for m in self.outpaint))
        if self.init_image is None:
            return
        init = open_image(self.init_image, "--init-image")
        if self.mask is not None:
            mask = open_image(self.mask, "--mask")
            if mask.size != init.size:
                raise InputError(f"the mask is {mask.size[0]}x{mask.size[1]} but the init image is "
                                 f"{init.size[0]}x{init.size[1]}: give a mask of the init image's size")

    def canvas_size(self) -> tuple[int, int] | None:
        """(width, height) of the init image plus the outpaint margins; None without an init image."""
        if self.init_image is None:
            return None
        w, h = open_image(self.init_image, "--init-image").size
        left, top, right, bottom = self.outpaint or (0, 0, 0, 0)
        return w + left + right, h + top + bottom


def open_image(image: ImageLike, option: str):
    """A PIL image from a path or an image (RGB untouched); InputError naming the option for a missing/bad file."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image
    path = Path(os.fspath(image)).expanduser()
    if not path.is_file():
        raise InputError(f"{option} file not found: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{option} is not a readable image: {path} ({type(exc).__name__})") from exc

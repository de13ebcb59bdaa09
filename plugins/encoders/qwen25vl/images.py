"""An image -> Qwen2-VL-style `pixel_values` rows and its (t, h, w) patch grid, with the PIL image processor.

Shared by the Qwen2.5-VL encoder and Qwen2.5-Omni's thinker, whose vision towers take the same patches.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from x2i_core import InputError


def image_patches(image: Image.Image, image_processor, size: dict, source: Any = None) -> tuple[np.ndarray, list[int]]:
    """(rows, [grid_t, grid_h, grid_w]) of one image; `size` holds the {"shortest_edge", "longest_edge"} pixel
    bounds; `source` (a path or the value given) names the image in errors."""
    if max(image.size) / max(1, min(image.size)) > 200:  # Qwen's resize rule rejects these
        raise InputError(f"image {media_name(source)} is too elongated ({image.size[0]}x{image.size[1]})")
    out = image_processor(images=[image], size=size, return_tensors="np")
    return np.asarray(out["pixel_values"], dtype=np.float32), [int(v) for v in out["image_grid_thw"][0]]


def media_name(value: Any) -> str:
    """A file's name, else the kind of value given."""
    return Path(value).name if isinstance(value, (str, Path)) else type(value).__name__


def check_pixel_options(max_pixels, min_pixels, video_max_pixels, video_fps, max_frames) -> None:
    """InputError for media options that cannot work."""
    if min_pixels < 1 or max_pixels < min_pixels or video_max_pixels < min_pixels:
        raise InputError(
            f"need 0 < min_pixels <= max_pixels and video_max_pixels, got min_pixels={min_pixels}, "
            f"max_pixels={max_pixels}, video_max_pixels={video_max_pixels}"
        )
    if video_fps <= 0 or max_frames < 1:
        raise InputError(f"need video_fps > 0 and max_frames >= 1, got video_fps={video_fps}, max_frames={max_frames}")

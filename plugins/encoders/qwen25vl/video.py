"""Video frames -> Qwen2.5-VL `pixel_values_videos` rows, without transformers' video processors.

Those processors need torchvision, which cannot be installed here. Qwen2.5-VL's vision tower takes
a video as patches of `temporal_patch_size` (2) consecutive frames: each row holds, channel by
channel, the same 14x14 patch from both frames. The image processor already resizes, normalises
and lays out each frame's patches in the merge order the model expects (it repeats a still image
over the temporal slot), so we run it on the frames and pair them up along the temporal slot.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def video_patches(frames: list[Image.Image], image_processor, size: dict) -> tuple[np.ndarray, list[int]]:
    """(rows, [grid_t, grid_h, grid_w]) for one video, as Qwen2.5-VL's video processor lays them out.

    `size` is the image processor's {"shortest_edge", "longest_edge"} pixel bounds for one frame.
    A frame count that does not divide by the temporal patch size is padded with the last frame,
    as transformers does.
    """
    if not frames:
        raise ValueError("a video needs at least one frame")
    first = frames[0].size
    # every frame must land on the same patch grid; decoded frames share a size, given lists may not
    frames = [f if f.size == first else f.resize(first, Image.BICUBIC) for f in frames]
    out = image_processor(images=frames, size=size, return_tensors="np")
    rows, grids = np.asarray(out["pixel_values"], dtype=np.float32), np.asarray(out["image_grid_thw"])
    temporal = int(image_processor.temporal_patch_size)
    patch = int(image_processor.patch_size)
    _, grid_h, grid_w = (int(v) for v in grids[0])
    per_frame = grid_h * grid_w
    channels = rows.shape[1] // (temporal * patch * patch)
    # each still-image row is (C, temporal, p, p) with the frame repeated in every temporal slot
    frame_rows = rows.reshape(len(frames), per_frame, channels, temporal, patch, patch)[:, :, :, 0]
    if pad := -len(frames) % temporal:
        frame_rows = np.concatenate([frame_rows, np.repeat(frame_rows[-1:], pad, axis=0)])
    grid_t = frame_rows.shape[0] // temporal
    # (grid_t, temporal, patches, C, p, p) -> (grid_t, patches, C, temporal, p, p): frames pair up per patch
    paired = frame_rows.reshape(grid_t, temporal, per_frame, channels, patch, patch).transpose(0, 2, 3, 1, 4, 5)
    return np.ascontiguousarray(paired.reshape(grid_t * per_frame, -1)), [grid_t, grid_h, grid_w]

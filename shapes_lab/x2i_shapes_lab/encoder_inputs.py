"""One image as the shapes MLLM's vision inputs, built by Qwen25VLEncoder's public `prepare()`.

Training and probing feed the model dialogues the encoder never renders (a task turn and an answer after the
first user turn), so they assemble input_ids themselves; the pixels must still be exactly what generation
feeds, hence the encoder's own preprocessing rather than a copy of it.
"""
from __future__ import annotations

import numpy as np


def image_patches(enc, image) -> tuple[np.ndarray, list[int]]:
    """(pixel rows, [t, h, w] patch grid) of one image, as `enc.encode` would see it."""
    from x2i_core import MultimodalPrompt

    inputs = enc.prepare([MultimodalPrompt.build(images=[image])])
    return inputs["pixel_values"].numpy(), [int(v) for v in inputs["image_grid_thw"][0]]

"""The learning-rate multiplier shared by the world's training commands."""
from __future__ import annotations

import math


def warmup_cosine(step: int, steps: int, minutes: float, max_minutes: float, warm: int = 100) -> float:
    """Linear warm-up, then cosine to 0 at whichever comes first, `steps` or `max_minutes` of wall time,
    so that a run stopped by its time budget has still decayed its learning rate."""
    progress = min(1.0, max(step / steps, minutes / max_minutes))
    return min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * progress))

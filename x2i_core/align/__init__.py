"""Alignment: train an AlignNet by attention distillation (teacher = backbone + its own text encoders,
student = the same frozen backbone + encoder + AlignNet).

One job per module: data (prompt streams), hooks (capture attention outputs), losses (distillation terms),
teacher_cache (precomputed teacher embeddings), checkpoint (atomic save / resume), trainer (the loop),
evaluate (teacher vs student samples). Importing this package does not import torch.
"""
from importlib import import_module

from .config import AlignConfig, parse_term_weights

_LAZY = {
    "train_alignnet": "x2i_core.align.trainer",
    "TrainResult": "x2i_core.align.trainer",
    "EvalConfig": "x2i_core.align.evaluate",
    "evaluate_alignnet": "x2i_core.align.evaluate",
    "precompute_teacher": "x2i_core.align.teacher_cache",
    "TeacherCache": "x2i_core.align.teacher_cache",
    "PromptStream": "x2i_core.align.data",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'x2i_core.align' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = ["AlignConfig", "parse_term_weights", *_LAZY]

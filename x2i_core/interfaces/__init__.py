"""The four interfaces every plugin implements: MultimodalEncoder, DiTBackbone, Aligner, Adapter.

One small module each; the values passed between them (EncodedPrompt, Conditioning, AttentionPoint) are in
values.py. Every member the CLI or the core calls on a component is declared here, optional capabilities
as flags (`supports_alignment`, `supports_true_cfg`) with defaults, so nothing is probed with getattr.

Shapes, in the names used throughout x2i:
  B batch, C encoder layers + 1 (embedding output first, after-final-norm last), S tokens,
  H encoder width, D backbone prompt width (4096 for FLUX's T5 slot), P pooled width (768, CLIP slot).
"""
from .adapter import STEP_KEYS, Adapter, Guide, LatentsInfo, StepInputs
from .aligner import Aligner
from .backbone import DiTBackbone, TeacherConditioner
from .encoder import MultimodalEncoder
from .values import AttentionPoint, Conditioning, EncodedPrompt

__all__ = ["MultimodalEncoder", "DiTBackbone", "TeacherConditioner", "Aligner", "Adapter", "Guide", "LatentsInfo",
           "StepInputs", "STEP_KEYS", "EncodedPrompt", "Conditioning", "AttentionPoint"]

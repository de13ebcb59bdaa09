"""Adapter: changes a backbone (a LoRA, a ControlNet, an IP-Adapter ...)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..prompt import MultimodalPrompt


class Adapter(ABC):
    """Changes a backbone (a LoRA, a ControlNet, an IP-Adapter ...)."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, pretrained: str, **options) -> "Adapter":
        """Load the adapter's weights from a hub id, folder or file."""

    @abstractmethod
    def apply(self, backbone) -> None:
        """Attach to the backbone (in place)."""

    def pipeline_kwargs(self, prompt: MultimodalPrompt) -> dict[str, Any]:
        """Extra keyword arguments for `DiTBackbone.generate` (for example a control image)."""
        return {}

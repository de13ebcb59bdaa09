"""What plugins register: specs (a name, a "module:Class" factory, a summary, defaults), never instances.

Registering specs keeps `x2i --help` and `x2i plugins` free of torch: the factory module is imported
only when the component is loaded.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

KINDS = ("encoder", "backbone", "aligner", "adapter")


@dataclass(frozen=True)
class ComponentSpec:
    """A loadable component.

    kind: one of KINDS. name: what users type (`--encoder qwen2.5-vl-7b`). factory: "module:Class"
    whose `from_pretrained(pretrained, **options)` builds it. pretrained: default hub id or folder
    (None: the user must give one). options: default keyword arguments for `from_pretrained`
    (for example a backbone preset's steps and guidance). modalities: what an encoder understands.
    model_types: HF `config.json` model_type values the factory can load, so that a bare folder given
    as `--encoder PATH` finds its plugin. fits: for aligners, {"encoder": name, "backbone": name}.
    """

    kind: str
    name: str
    factory: str
    summary: str = ""
    pretrained: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    modalities: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    fits: dict[str, str] = field(default_factory=dict)
    plugin: str = ""  # filled in by the plugin manager

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown component kind {self.kind!r}; expected one of {KINDS}")
        if ":" not in self.factory:
            raise ValueError(f"factory must look like 'module:Class', got {self.factory!r}")

    def load_factory(self):
        """Import and return the factory class (this is where torch gets imported)."""
        module_name, _, attr = self.factory.partition(":")
        module = importlib.import_module(module_name)
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


def EncoderSpec(name: str, factory: str, **kw) -> ComponentSpec:
    """Spec of a MultimodalEncoder."""
    return ComponentSpec("encoder", name, factory, **kw)


def BackboneSpec(name: str, factory: str, **kw) -> ComponentSpec:
    """Spec of a DiTBackbone."""
    return ComponentSpec("backbone", name, factory, **kw)


def AlignerSpec(name: str, factory: str = "x2i_core.alignnet:AlignNet", **kw) -> ComponentSpec:
    """Spec of a trained Aligner (usually an AlignNet folder or hub id)."""
    return ComponentSpec("aligner", name, factory, **kw)


def AdapterSpec(name: str, factory: str, **kw) -> ComponentSpec:
    """Spec of an Adapter."""
    return ComponentSpec("adapter", name, factory, **kw)


@dataclass(frozen=True)
class WorldSpec:
    """A complete set of components (encoder, backbone, aligner) that `x2i generate` may use when the user
    names no model. Any plugin may offer one; `Registry.default_world()` says which one answers.

    message: one line printed when the world is used by default (which models answer, how to pick others).
    """

    name: str
    encoder: str
    backbone: str
    aligner: str
    summary: str = ""
    message: str = ""
    #: (adapter name, folder, scale) the world adds for an edit (an image + text prompt) when no adapter or DiT image
    #: option is given, e.g. its trained LightControl branch
    edit_adapters: tuple = ()
    plugin: str = ""  # filled in by the plugin manager

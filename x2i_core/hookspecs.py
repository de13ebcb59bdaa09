"""The hooks a plugin implements, with what each receives and when it runs.

Every `register_*` hook receives a `register` callback and calls it once per spec; it runs once, when the
plugin is loaded (the first `get_registry()` of a process), and must import no torch: specs name their
factory as a "module:Class" string that is imported only when the component is built.

A hook implementation may take a subset of the arguments, so new arguments never break old plugins.
A plugin that implements a hook not listed here fails to load (a misspelt hook would otherwise do nothing).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:  # only for the annotations: importing click or the specs here costs nothing at run time
    import click

    from .specs import ComponentSpec, WorldSpec

hookspec = pluggy.HookspecMarker("x2i")
hookimpl = pluggy.HookimplMarker("x2i")


@hookspec
def register_encoders(register: "Callable[[ComponentSpec], None]") -> None:
    """Register MultimodalEncoder specs: call `register(EncoderSpec(name, "module:Class", ...))` for each.

    The factory's `from_pretrained(checkpoint, device=, dtype=, **options)` builds a MultimodalEncoder.
    A name another plugin already registered makes this plugin fail to load (the first one keeps it).
    """


@hookspec
def register_backbones(register: "Callable[[ComponentSpec], None]") -> None:
    """Register DiTBackbone specs (presets included): call `register(BackboneSpec(...))` for each.

    The factory's `from_pretrained(checkpoint, device=, dtype=, offload=, **options)` builds a DiTBackbone;
    a preset is the same factory with another default checkpoint and options.
    """


@hookspec
def register_aligners(register: "Callable[[ComponentSpec], None]") -> None:
    """Register trained Aligner specs: call `register(AlignerSpec(name, pretrained=..., fits=...))` for each.

    `fits={"encoder": name, "backbone": name}` lets `x2i generate` pick the aligner when none is given.
    """


@hookspec
def register_adapters(register: "Callable[[ComponentSpec], None]") -> None:
    """Register Adapter specs: call `register(AdapterSpec(...))` for each."""


@hookspec
def register_worlds(register: "Callable[[WorldSpec], None]") -> None:
    """Register WorldSpecs: complete (encoder, backbone, aligner) sets that `x2i generate` may use when the
    user names no model. The names must be registered (by this plugin or another)."""


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add click commands to the `x2i` group; runs when the `x2i` command starts, after every plugin loaded.

    Import torch inside the commands, never at module level, so `x2i --help` stays fast.
    """

"""The hooks a plugin implements. Each receives a `register` callback and calls it once per spec.

A hook implementation may take a subset of the arguments, so new arguments never break old plugins.
"""
import pluggy

hookspec = pluggy.HookspecMarker("x2i")
hookimpl = pluggy.HookimplMarker("x2i")


@hookspec
def register_encoders(register):
    """Register MultimodalEncoder specs: call `register(EncoderSpec(...))` for each."""


@hookspec
def register_backbones(register):
    """Register DiTBackbone specs (presets included): call `register(BackboneSpec(...))` for each."""


@hookspec
def register_aligners(register):
    """Register trained Aligner specs: call `register(AlignerSpec(...))` for each."""


@hookspec
def register_adapters(register):
    """Register Adapter specs: call `register(AdapterSpec(...))` for each."""


@hookspec
def register_commands(cli):
    """Add click commands to the `x2i` group (`cli` is the click.Group)."""

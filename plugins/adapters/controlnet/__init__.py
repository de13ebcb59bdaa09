"""Built-in adapter plugin `controlnet`: FLUX ControlNets (InstantX/Shakker-Labs/XLabs layouts, Union with a mode).

Registers a spec only; torch and diffusers are imported by `adapter.py` when a ControlNet is loaded.
"""
from x2i_core import AdapterSpec, hookimpl


@hookimpl
def register_adapters(register):
    """`--controlnet DIR_OR_ID --control-image FILE [--control-mode M] [--control-scale S]` (repeatable)."""
    register(AdapterSpec(
        "controlnet", "x2i_plugins.adapters.controlnet.adapter:ControlNetAdapter",
        summary="FLUX ControlNet (FluxControlNetModel; several at once, Union ControlNets with a mode); "
                "its residuals are computed from the AlignNet's embeddings",
    ))

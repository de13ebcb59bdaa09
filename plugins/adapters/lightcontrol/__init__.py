"""Built-in adapter plugin `lightcontrol`: the X2I paper's stage-2 LightControl branch (trained by
`x2i train-lightcontrol`), which reads the source image of an edit and adds a residual after each double block.

Registers a spec only; torch and diffusers are imported by `adapter.py` when a branch is loaded.
"""
from x2i_core import AdapterSpec, hookimpl


@hookimpl
def register_adapters(register):
    """`--lightcontrol DIR [--lightcontrol-image FILE] [--lightcontrol-scale S]` (the image defaults to the first --image)."""
    register(AdapterSpec(
        "lightcontrol", "x2i_plugins.adapters.lightcontrol.adapter:LightControlAdapter",
        summary="LightControl branch (X2I stage 2): the source image's latents steer every double block; for edits",
    ))

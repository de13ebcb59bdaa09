"""Built-in adapter plugin `ip-adapter`: the FLUX IP-Adapter (XLabs layout) with its CLIP ViT-L/14 image encoder.

Registers a spec only; torch, diffusers and transformers are imported by `adapter.py` when it is loaded.
"""
from x2i_core import AdapterSpec, hookimpl


@hookimpl
def register_adapters(register):
    """`--ip-adapter DIR_OR_ID --ip-image FILE [--ip-scale S]`."""
    register(AdapterSpec(
        "ip-adapter", "x2i_plugins.adapters.ip_adapter.adapter:IPAdapter",
        summary="FLUX IP-Adapter (e.g. XLabs-AI/flux-ip-adapter) with a CLIP ViT-L/14 image encoder; "
                "a reference image steers the double blocks' attention",
    ))

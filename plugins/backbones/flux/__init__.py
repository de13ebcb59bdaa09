"""Built-in backbone plugin `flux`: FLUX.1 family presets (dev, schnell, shuttle-3-diffusion) and any Flux folder.

Registers specs only; torch and diffusers are imported by `backbone.py` when a backbone is loaded.
"""
from x2i_core import BackboneSpec, hookimpl

FACTORY = "x2i_plugins.backbones.flux.backbone:FluxBackbone"
MODEL_TYPES = ("FluxPipeline", "FluxTransformer2DModel")

# name -> (hub id, summary, defaults passed to FluxBackbone.from_pretrained)
PRESETS = {
    "flux-dev": (
        "black-forest-labs/FLUX.1-dev",
        "FLUX.1-dev, guidance-distilled, 28 steps (the X2I paper's teacher)",
        {"default_steps": 28, "default_guidance": 3.5, "max_sequence_length": 512},
    ),
    "flux-schnell": (
        "black-forest-labs/FLUX.1-schnell",
        "FLUX.1-schnell, timestep-distilled, 4 steps, Apache-2.0",
        {"default_steps": 4, "default_guidance": 0.0, "max_sequence_length": 256},
    ),
    "shuttle-3-diffusion": (
        "shuttleai/shuttle-3-diffusion",
        "Shuttle 3 Diffusion (from FLUX.1-schnell), 4 steps, Apache-2.0",
        {"default_steps": 4, "default_guidance": 3.5, "max_sequence_length": 256},
    ),
}


@hookimpl
def register_backbones(register):
    """Register the generic `flux` backbone (give it a checkpoint) and the FLUX presets."""
    # The generic spec first: a bare Flux folder given as `--backbone PATH` resolves to it, not to a preset.
    register(BackboneSpec(
        "flux", FACTORY,
        summary="any FLUX.1-architecture diffusers folder or hub id (give --backbone-path)",
        model_types=MODEL_TYPES,
    ))
    for name, (hub_id, summary, options) in PRESETS.items():
        register(BackboneSpec(
            name, FACTORY, summary=summary, pretrained=hub_id, options=dict(options), model_types=MODEL_TYPES,
        ))

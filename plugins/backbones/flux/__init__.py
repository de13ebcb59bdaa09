"""Built-in backbone plugin `flux`: FLUX.1 family presets (dev, schnell, shuttle, turbo, flex, fill, kontext) and any Flux folder.

A transformer fine-tune given as one .safetensors file loads on a base folder with the `transformer_file` option.

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
    "shuttle-3.1-aesthetic": (
        "shuttleai/shuttle-3.1-aesthetic",
        "Shuttle 3.1 Aesthetic (from Shuttle 3 Diffusion), 4 steps, Apache-2.0",
        {"default_steps": 4, "default_guidance": 3.5, "max_sequence_length": 256},
    ),
    "flux-turbo": (
        "black-forest-labs/FLUX.1-dev",
        "FLUX.1-dev + the Turbo-Alpha LoRA (alimama-creative/FLUX.1-Turbo-Alpha), 8 steps",
        {"default_steps": 8, "default_guidance": 3.5, "max_sequence_length": 512,
         "lora": "alimama-creative/FLUX.1-Turbo-Alpha", "lora_weight_name": "diffusion_pytorch_model.safetensors"},
    ),
    "flex": (
        "ostris/Flex.1-alpha",
        "Flex.1-alpha (8 double blocks, Apache-2.0), 28 steps: its AlignNet must be aligned on it",
        {"default_steps": 28, "default_guidance": 3.5, "max_sequence_length": 512, "own_alignment": True},
    ),
    "flux-fill": (
        "black-forest-labs/FLUX.1-Fill-dev",
        "FLUX.1 Fill dev (inpaint/outpaint; --init-image with --mask or --outpaint), AlignNet of FLUX.1-dev",
        {"default_steps": 50, "default_guidance": 30.0, "max_sequence_length": 512},
    ),
    "flux-kontext": (
        "black-forest-labs/FLUX.1-Kontext-dev",
        "FLUX.1 Kontext dev (edits --init-image; the image enters the sequence), AlignNet of FLUX.1-dev",
        {"default_steps": 28, "default_guidance": 2.5, "max_sequence_length": 512},
    ),
}
#: presets whose transformer takes more inputs than the image latents (variants.py adds them to the loop)
VARIANT_FACTORIES = {
    "flux-fill": "x2i_plugins.backbones.flux.variants:FluxFillBackbone",
    "flux-kontext": "x2i_plugins.backbones.flux.variants:FluxKontextBackbone",
}
#: other names for a preset (the X2I reference's default backbone is Shuttle 3 Diffusion: `--backbone shuttle`)
ALIASES = {"shuttle": "shuttle-3-diffusion"}


@hookimpl
def register_backbones(register):
    """Register the generic `flux` backbone (give it a checkpoint) and the FLUX presets."""
    # The generic spec first: a bare Flux folder given as `--backbone PATH` resolves to it, not to a preset.
    register(BackboneSpec(
        "flux", FACTORY,
        summary="any FLUX.1-architecture diffusers folder or hub id (give --backbone-path; a fine-tune as one "
                ".safetensors file: --transformer-file)",
        model_types=MODEL_TYPES,
    ))
    for name, (hub_id, summary, options) in PRESETS.items():
        register(BackboneSpec(
            name, VARIANT_FACTORIES.get(name, FACTORY), summary=summary, pretrained=hub_id, options=dict(options),
            model_types=MODEL_TYPES,
        ))
    for alias, target in ALIASES.items():
        hub_id, summary, options = PRESETS[target]
        register(BackboneSpec(
            alias, FACTORY, summary=f"= {target}: {summary}", pretrained=hub_id, options=dict(options),
            model_types=MODEL_TYPES,
        ))

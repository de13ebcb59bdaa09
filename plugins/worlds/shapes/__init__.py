"""Built-in world `shapes`: a trained miniature X2I that ships as the default of `x2i generate`.

Registers, without importing torch: the backbone preset `shapes` (a FLUX.1-architecture teacher trained
from scratch, loaded by the flux plugin's FluxBackbone), the encoder preset `shapes-mllm` (a small
Qwen2.5-VL, loaded by the qwen2.5-vl plugin's Qwen25VLEncoder), the aligner `shapes` fitting both, and
the world itself. Only inference presets and their weights live here: the world's research code (scene
generator, training, evaluation, probes, report, the `x2i shapes` commands), its ablation AlignNets and training
logs are the separate distribution x2i-shapes-lab in the repo's shapes_lab/ folder.
"""
from pathlib import Path

from x2i_core import AlignerSpec, BackboneSpec, EncoderSpec, WorldSpec, hookimpl

WEIGHTS = Path(__file__).resolve().parent / "weights"
TEACHER_DIR = WEIGHTS / "teacher"  # diffusers FluxPipeline folder (teacher text encoders included)
MLLM_DIR = WEIGHTS / "mllm"  # Qwen2.5-VL folder
ALIGNNET_DIR = WEIGHTS / "alignnet"  # AlignNet folder made by `x2i align`
LIGHTCONTROL_DIR = WEIGHTS / "lightcontrol"  # LightControl branch made by `x2i train-lightcontrol` (edits)
IMAGE_PIXELS = 64 * 64
BACKBONE_OPTIONS = {"default_steps": 20, "default_guidance": 0.0, "max_sequence_length": 24, "default_size": 64,
                    "default_true_cfg": 3.0}


@hookimpl
def register_backbones(register):
    """The shapes teacher as a preset of the flux family (same factory as flux-dev)."""
    register(BackboneSpec(
        "shapes", "x2i_plugins.backbones.flux.backbone:FluxBackbone",
        summary="shapes world: a 64x64 FLUX-architecture model trained from scratch on CPU (built-in default)",
        pretrained=str(TEACHER_DIR), options=dict(BACKBONE_OPTIONS),
    ))


@hookimpl
def register_encoders(register):
    """The shapes MLLM as a preset of the qwen2.5-vl family."""
    register(EncoderSpec(
        "shapes-mllm", "x2i_plugins.encoders.qwen25vl.encoder:Qwen25VLEncoder",
        summary="shapes world: a small Qwen2.5-VL trained from scratch (English, German, 64x64 images)",
        pretrained=str(MLLM_DIR), modalities=("text", "image"),
        options={"max_pixels": IMAGE_PIXELS, "min_pixels": 32 * 32},
    ))


@hookimpl
def register_aligners(register):
    """The AlignNet aligned (English text only) between shapes-mllm and the shapes backbone."""
    register(AlignerSpec(
        "shapes", summary="shapes world AlignNet (scale fusion + 1 context layer, RKL), aligned with `x2i align`",
        pretrained=str(ALIGNNET_DIR), fits={"encoder": "shapes-mllm", "backbone": "shapes"},
    ))


@hookimpl
def register_worlds(register):
    """The shapes world as a complete set: `x2i generate` uses it when no model is named."""
    register(WorldSpec(
        "shapes", encoder="shapes-mllm", backbone="shapes", aligner="shapes",
        summary="a 64x64 miniature X2I trained on CPU (teacher, MLLM, AlignNet)",
        message="Using the built-in shapes world (64x64 miniature; pass --encoder/--backbone for real models).",
        # an image + text prompt is an edit: the trained LightControl branch reads the image (docs/shapes_world.md)
        edit_adapters=(("lightcontrol", str(LIGHTCONTROL_DIR), 1.0),) if (LIGHTCONTROL_DIR / "config.json").is_file()
        else (),
    ))


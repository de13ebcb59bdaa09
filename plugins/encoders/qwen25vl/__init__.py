"""Built-in encoder plugin: Qwen2.5-VL (text, images, video). Registers specs only; no torch here."""
from x2i_core import EncoderSpec, hookimpl

FACTORY = "x2i_plugins.encoders.qwen25vl.encoder:Qwen25VLEncoder"
MODALITIES = ("text", "image", "video")
MODEL_TYPES = ("qwen2_5_vl",)


@hookimpl
def register_encoders(register):
    """Qwen2.5-VL 3B and 7B; `qwen2.5-vl` is the 7B and loads any Qwen2.5-VL hub id or folder given."""
    for name, checkpoint, summary in (
        ("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen2.5-VL 7B (29 layers x 3584): text, images, video"),
        ("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL 3B (37 layers x 2048): text, images, video"),
        ("qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen2.5-VL, 7B by default; pass any Qwen2.5-VL hub id or folder"),
    ):
        register(EncoderSpec(
            name, FACTORY, summary=summary, pretrained=checkpoint, modalities=MODALITIES, model_types=MODEL_TYPES,
        ))

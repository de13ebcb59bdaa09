"""Built-in encoder plugin: Qwen2.5-Omni's thinker (text, images, video, audio). Registers specs only; no torch here."""
from x2i_core import EncoderSpec, hookimpl

FACTORY = "x2i_plugins.encoders.qwen25omni.encoder:Qwen25OmniEncoder"
MODALITIES = ("text", "image", "video", "audio")
MODEL_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")


@hookimpl
def register_encoders(register):
    """Qwen2.5-Omni 3B and 7B; `qwen2.5-omni` is the 7B and loads any Qwen2.5-Omni hub id or folder given."""
    for name, checkpoint, summary in (
        ("qwen2.5-omni-7b", "Qwen/Qwen2.5-Omni-7B",
         "Qwen2.5-Omni 7B thinker (29 layers x 3584): text, images, video, audio (+ a video's sound track)"),
        ("qwen2.5-omni-3b", "Qwen/Qwen2.5-Omni-3B",
         "Qwen2.5-Omni 3B thinker (37 layers x 2048): text, images, video, audio (+ a video's sound track)"),
        ("qwen2.5-omni", "Qwen/Qwen2.5-Omni-7B",
         "Qwen2.5-Omni, 7B by default; pass any Qwen2.5-Omni hub id or folder"),
    ):
        register(EncoderSpec(
            name, FACTORY, summary=summary, pretrained=checkpoint, modalities=MODALITIES, model_types=MODEL_TYPES,
        ))

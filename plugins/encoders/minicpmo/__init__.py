"""Built-in encoder plugin: MiniCPM-o-2.6 (text, images, video, audio), ported onto transformers' own Qwen2,
Idefics2 (SigLIP NaViT) and Whisper classes: the released checkpoint loads by key mapping, no remote code.
Registers specs only; no torch here."""
from x2i_core import EncoderSpec, hookimpl

FACTORY = "x2i_plugins.encoders.minicpmo.encoder:MiniCPMOEncoder"
MODALITIES = ("text", "image", "video", "audio")
MODEL_TYPES = ("minicpmo",)


@hookimpl
def register_encoders(register):
    """MiniCPM-o-2.6 as `minicpm-o`, with the alias `minicpm`; any MiniCPM-o-2.6 hub id or folder loads."""
    for name, summary in (
        ("minicpm-o", "MiniCPM-o-2.6 (29 layers x 3584): text, images, video, audio"),
        ("minicpm", "MiniCPM-o-2.6 (alias of minicpm-o): text, images, video, audio"),
    ):
        register(EncoderSpec(
            name, FACTORY, summary=summary, pretrained="openbmb/MiniCPM-o-2_6", modalities=MODALITIES,
            model_types=MODEL_TYPES,
        ))

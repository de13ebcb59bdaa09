"""Built-in adapter plugin `lora`: FLUX LoRAs in the diffusers, kohya and XLabs layouts, several at once with weights.

Registers a spec only; torch, diffusers and peft are imported by `adapter.py` when a LoRA is loaded.
"""
from x2i_core import AdapterSpec, hookimpl


@hookimpl
def register_adapters(register):
    """`--lora FILE_OR_DIR[:SCALE]` (repeatable), `--lora-fuse`."""
    register(AdapterSpec(
        "lora", "x2i_plugins.adapters.lora.adapter:LoraAdapter",
        summary="FLUX LoRA (diffusers, kohya, XLabs .safetensors; several at once with weights; optional fuse)",
    ))

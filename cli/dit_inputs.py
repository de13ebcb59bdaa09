"""`x2i generate` options for what enters the DiT rather than the MLLM: LoRAs, an init image, a mask, outpainting.

`--image` stays "an image the MLLM reads"; `--init-image` is the image the DiT starts from (one file may be given
to both). Everything here is checked before any model loads. No torch at import.
"""
from __future__ import annotations

from pathlib import Path

import click

from x2i_core.errors import InputError

OPTIONS = [
    click.option("--lora", "loras", multiple=True, metavar="FILE_OR_DIR[:SCALE]",
                 help="A FLUX LoRA (diffusers, kohya or XLabs layout; .safetensors file, folder or hub id), with an "
                      "optional weight (default 1); repeat for several."),
    click.option("--lora-fuse", is_flag=True, help="Fuse the LoRAs into the transformer's weights (faster steps)."),
    click.option("--init-image", metavar="FILE", help="img2img: start from this image (noised to --strength)."),
    click.option("--strength", type=float, metavar="S",
                 help="How much of the schedule runs from the init image, in (0, 1]: 1 = from pure noise "
                      "(default 0.8; 1 with --mask or --outpaint)."),
    click.option("--mask", metavar="FILE", help="Inpaint: repaint where this mask is white (the init image's size)."),
    click.option("--outpaint", metavar="L,T,R,B",
                 help="Outpaint: extend the init image by these pixel margins (left, top, right, bottom)."),
    click.option("--lightcontrol", metavar="DIR", help="A LightControl branch (x2i train-lightcontrol) for edits: it "
                 "reads the source image (default: the first --image)."),
    click.option("--lightcontrol-image", metavar="FILE", help="The source image of --lightcontrol, if not the first --image."),
    click.option("--lightcontrol-scale", type=float, default=1.0, show_default=True, help="LightControl strength."),
]


def dit_options(command):
    """Add the options above to a click command (they arrive in its **kwargs)."""
    for option in reversed(OPTIONS):
        command = option(command)
    return command


def dit_inputs(values: dict) -> tuple[list, dict]:
    """(adapter choices for X2IPipeline.from_names, GenerationRequest fields for the pipeline call), checked now:
    missing files, a strength outside (0, 1], bad margins, a mask of another size than the init image."""
    from x2i_core.request import AdapterChoice, GenerationRequest, parse_outpaint

    adapters = []
    for value in values.get("loras") or ():
        choice = AdapterChoice.parse("lora", value, fuse=bool(values.get("lora_fuse")))
        where = choice.pretrained
        hub_like = where.count("/") == 1 and not where.startswith((".", "/", "~")) and not Path(where).suffix
        if not hub_like and not Path(where).expanduser().exists():
            raise InputError(f"--lora file or folder not found: {where}")
        adapters.append(choice)
    if values.get("lora_fuse") and not adapters:
        raise InputError("--lora-fuse needs at least one --lora")
    light = values.get("lightcontrol")
    if light:
        if not (Path(light).expanduser() / "config.json").is_file():
            raise InputError(f"--lightcontrol takes a folder made by x2i train-lightcontrol (config.json): {light}")
        image = values.get("lightcontrol_image")
        if image and not Path(image).expanduser().is_file():
            raise InputError(f"--lightcontrol-image file not found: {image}")
        adapters.append(AdapterChoice("lightcontrol", light, float(values.get("lightcontrol_scale", 1.0)),
                                      {"image": image} if image else {}))
    elif values.get("lightcontrol_image"):
        raise InputError("--lightcontrol-image needs a --lightcontrol")
    fields = {key: values[key] for key in ("init_image", "strength", "mask") if values.get(key) is not None}
    if values.get("outpaint"):
        fields["outpaint"] = parse_outpaint(values["outpaint"])
    GenerationRequest(**fields).check()
    return adapters, fields

"""`x2i generate` options for the ControlNet and IP-Adapter adapters (and --transformer-file), checked before any
model loads. No torch at import.

    --controlnet DIR_OR_ID --control-image FILE [--control-mode M] [--control-scale S]   (repeat the group)
    --control-to-encoder                       the control images go to the MLLM too (the X2I paper's "w/i")
    --ip-adapter DIR_OR_ID --ip-image FILE [--ip-scale S] [--ip-image-encoder DIR_OR_ID]

The i-th --control-image, --control-mode and --control-scale belong to the i-th --controlnet (one --control-scale
or one --control-image given once applies to all).
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from x2i_core.errors import IncompatibleError, InputError

OPTIONS = [
    click.option("--controlnet", "controlnets", multiple=True, metavar="DIR_OR_ID",
                 help="A FLUX ControlNet (FluxControlNetModel folder or hub id); repeat for several."),
    click.option("--control-image", "control_images", multiple=True, metavar="FILE",
                 help="The control image of each --controlnet, in order."),
    click.option("--control-mode", "control_modes", multiple=True, metavar="M",
                 help="Union ControlNets: the mode index of each --controlnet, in order ('none' for a plain one)."),
    click.option("--control-scale", "control_scales", multiple=True, type=float, metavar="S",
                 help="Conditioning scale of each --controlnet (default 1; one value applies to all)."),
    click.option("--control-to-encoder", is_flag=True,
                 help="Also give the control images to the MLLM (after the --image ones): the paper's 'w/i'."),
    click.option("--ip-adapter", metavar="DIR_OR_ID", help="A FLUX IP-Adapter (e.g. XLabs-AI/flux-ip-adapter)."),
    click.option("--ip-image", metavar="FILE", help="The reference image the IP-Adapter follows."),
    click.option("--ip-scale", type=float, default=1.0, show_default=True, help="IP-Adapter strength."),
    click.option("--ip-image-encoder", metavar="DIR_OR_ID",
                 help="Its CLIP ViT-L/14 image encoder (default openai/clip-vit-large-patch14)."),
    click.option("--transformer-file", metavar="FILE.safetensors",
                 help="A FLUX transformer fine-tune as one .safetensors file, used on the VAE and scheduler of "
                      "--backbone/--backbone-path (diffusers or original BFL key layout)."),
    click.option("--quantize", type=click.Choice(["int8", "nf4"]),
                 help="Quantise the transformer with bitsandbytes as it loads (CUDA; the `quant` extra; with "
                      "--memory high or balanced)."),
]


def adapter_options(command):
    """Add the options above to a click command (they arrive in its **kwargs)."""
    for option in reversed(OPTIONS):
        command = option(command)
    return command


def _spread(values: tuple, count: int, option: str, default=None) -> list:
    """One value per ControlNet: as many as --controlnet, one for all, or none (the default)."""
    if not values:
        return [default] * count
    if len(values) == 1:
        return list(values) * count
    if len(values) != count:
        raise InputError(f"{option} was given {len(values)} times for {count} --controlnet: give it once per "
                         f"--controlnet, or once for all")
    return list(values)


def _mode(value):
    if value is None or str(value).lower() in ("none", "-"):
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--control-mode takes a mode index (0, 1, ...) or 'none', got {value!r}") from None


def _image(path: str, option: str) -> str:
    if not Path(path).expanduser().is_file():
        raise InputError(f"{option} file not found: {path}")
    return path


def _local_config(where: str) -> dict | None:
    """config.json of a local folder (None for hub ids); read as JSON only."""
    path = Path(where).expanduser() / "config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def adapter_inputs(values: dict) -> tuple[list, list[str]]:
    """(adapter choices for X2IPipeline.from_names, images to give the MLLM too), checked now."""
    from x2i_core.request import AdapterChoice

    nets = list(values.get("controlnets") or ())
    images = list(values.get("control_images") or ())
    if images and not nets:
        raise InputError("--control-image needs a --controlnet")
    choices = []
    if nets:
        if not images:
            raise InputError("each --controlnet needs its --control-image FILE")
        images = _spread(tuple(images), len(nets), "--control-image")
        modes = _spread(tuple(values.get("control_modes") or ()), len(nets), "--control-mode")
        scales = _spread(tuple(values.get("control_scales") or ()), len(nets), "--control-scale", 1.0)
        for net, image, mode, scale in zip(nets, images, modes, scales):
            config = _local_config(net)
            if config is not None and config.get("_class_name") != "FluxControlNetModel":
                raise IncompatibleError(f"the ControlNet {net} is a {config.get('_class_name', 'model of unknown class')}"
                                        f", made for another architecture: x2i's FLUX backbones take FluxControlNetModel")
            choices.append(AdapterChoice("controlnet", net, float(scale),
                                         {"image": _image(image, "--control-image"), "mode": _mode(mode)}))
    elif values.get("control_modes") or values.get("control_scales") or values.get("control_to_encoder"):
        raise InputError("--control-mode, --control-scale and --control-to-encoder need a --controlnet")
    ip, ip_image = values.get("ip_adapter"), values.get("ip_image")
    if ip_image and not ip:
        raise InputError("--ip-image needs an --ip-adapter")
    if ip:
        if not ip_image:
            raise InputError("--ip-adapter needs its reference image: --ip-image FILE")
        options = {"image": _image(ip_image, "--ip-image")}
        if values.get("ip_image_encoder"):
            options["image_encoder"] = values["ip_image_encoder"]
        choices.append(AdapterChoice("ip-adapter", ip, float(values.get("ip_scale", 1.0)), options))
    to_encoder = [c.options["image"] for c in choices if c.name == "controlnet"] if values.get("control_to_encoder") else []
    return choices, to_encoder


def backbone_options(values: dict) -> dict:
    """Options for the backbone's from_pretrained (`transformer_file`, `quantize`), the file checked now."""
    options = {"quantize": values["quantize"]} if values.get("quantize") else {}
    path = values.get("transformer_file")
    if not path:
        return options
    if Path(path).suffix.lower() != ".safetensors":
        raise InputError(f"--transformer-file must be a .safetensors file (never a pickle), got {Path(path).name}")
    return {**options, "transformer_file": _image(path, "--transformer-file")}


def check_against_backbone(choices: list, backbone_folder: str | None) -> None:
    """IncompatibleError when a local ControlNet's widths differ from a local backbone folder's transformer."""
    if not backbone_folder:
        return
    transformer = _local_config(str(Path(backbone_folder).expanduser() / "transformer"))
    if transformer is None:
        return
    for choice in choices:
        config = _local_config(choice.pretrained) if choice.name == "controlnet" else None
        if config is None:
            continue
        for key in ("joint_attention_dim", "pooled_projection_dim", "attention_head_dim", "num_attention_heads"):
            if key in config and key in transformer and config[key] != transformer[key]:
                raise IncompatibleError(f"the ControlNet {choice.pretrained} was made for another architecture: "
                                        f"{key} {config[key]} vs {transformer[key]}")

"""How X2IPipeline uses adapters and a GenerationRequest: loading adapters by name, the request's size and checks,
the guides and backbone arguments of one generation, and what PNG metadata records about them."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from .errors import InputError
from .interfaces import Adapter, DiTBackbone
from .plugins import load_component
from .request import AdapterChoice, GenerationRequest

#: GenerationRequest fields that X2IPipeline.__call__ takes as keyword arguments beyond its own
REQUEST_FIELDS = frozenset(f.name for f in fields(GenerationRequest)) - {
    "prompt", "negative_prompt", "width", "height", "steps", "guidance", "true_cfg", "seed", "num_images"}


def load_adapters(choices: Sequence[Adapter | AdapterChoice | str | tuple]) -> list[Adapter]:
    """Adapters from instances, AdapterChoice, a registered name, or (name, checkpoint[, scale[, options]])."""
    loaded = []
    for choice in choices:
        if isinstance(choice, Adapter):
            loaded.append(choice)
            continue
        if isinstance(choice, str):
            choice = AdapterChoice(choice)
        elif isinstance(choice, tuple):
            choice = AdapterChoice(*choice)
        adapter = load_component("adapter", choice.name, choice.pretrained, scale=choice.scale, **choice.options)
        loaded.append(adapter)
    return loaded


def make_request(prompt, *, negative_prompt: str, seed: int, num_images: int, **request_fields: Any) -> GenerationRequest:
    """A checked GenerationRequest; an unknown keyword is an InputError naming the ones that exist."""
    unknown = set(request_fields) - REQUEST_FIELDS
    if unknown:
        raise InputError(f"unknown generation option(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(REQUEST_FIELDS))}")
    request = GenerationRequest(prompt=prompt, negative_prompt=negative_prompt, seed=seed, num_images=num_images,
                                **request_fields)
    request.check()
    return request


def request_size(request: GenerationRequest, width: int | None, height: int | None,
                 backbone: DiTBackbone) -> tuple[int, int]:
    """(width, height): the ones given, else the init image's canvas rounded down to the backbone's multiple,
    else the backbone's default size."""
    canvas = request.canvas_size()
    if canvas is not None:
        m = int(backbone.size_multiple)
        width = width or max(m, canvas[0] // m * m)
        height = height or max(m, canvas[1] // m * m)
    size = int(backbone.default_size)
    return int(width or size), int(height or size)


def backbone_inputs(request: GenerationRequest, adapters: Sequence[Adapter], backbone: DiTBackbone) -> dict[str, Any]:
    """The `request` and `guides` keyword arguments for the backbone's sampling loop (empty when nothing needs them)."""
    for adapter in adapters:
        adapter.check_request(request)
    pairs = [(adapter.name, adapter.guide(request)) for adapter in adapters]
    guides = [guide for _, guide in pairs if guide is not None]
    wants = ["--init-image"] if request.init_image is not None else []
    wants += [name for name, guide in pairs if guide is not None]
    if not wants:
        return {}
    if not backbone.supports_guides:
        raise InputError(f"the backbone {backbone.identity} cannot take {', '.join(wants)} (no adapter guides)")
    return {"request": request, "guides": guides}


def _name(value) -> str:
    return Path(str(value)).name if isinstance(value, (str, Path)) else "<image>"


def request_metadata(request: GenerationRequest, adapters: Sequence[Adapter]) -> dict[str, str]:
    """PNG text chunks for the adapters (each `name:source@scale`, joined by '; ') and the DiT's image inputs."""
    meta: dict[str, str] = {}
    if adapters:
        meta["adapters"] = "; ".join(adapter.describe() for adapter in adapters)
    if request.init_image is not None:
        meta["init_image"] = _name(request.init_image)
        meta["strength"] = f"{request.effective_strength():g}"
    if request.mask is not None:
        meta["mask"] = _name(request.mask)
    if request.outpaint:
        meta["outpaint"] = ",".join(str(m) for m in request.outpaint)
    return meta

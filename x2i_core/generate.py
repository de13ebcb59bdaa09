"""Generation as a Python API: encoder -> AlignNet -> backbone, and saving PNGs with their metadata.

    pipe = X2IPipeline.from_names(encoder="qwen2.5-vl-7b", backbone="flux-dev", aligner="DIR")
    images = pipe(MultimodalPrompt.build("a cat", images=["dog.png"]), num_images=2, seed=7)
    save_images(images, "out.png")   # out-0.png, out-1.png, prompt/seed/models in PNG text chunks

`x2i generate` is a thin shell around exactly this.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import limits
from .adapters import backbone_inputs, load_adapters, make_request, request_metadata, request_size
from .aligner_record import fill_models, read_record
from .alignnet import AlignNet
from .device import resolve as resolve_device
from .errors import InputError, PluginError
from .interfaces import Adapter, Aligner, DiTBackbone, MultimodalEncoder
from .memory import place_encoder, resolve_memory_level
from .outputs import check_output_dir, check_output_file, follow_umask
from .plugins import get_registry, load_component
from .prompt import MultimodalPrompt
from .prompt_files import as_prompt
from .reasoning import DEFAULT_REASON_TOKENS, check_can_reason, reasoned_encoding
from .request import AdapterChoice

#: PNG text-chunk keys written by save_images, in this order
METADATA_KEYS = ("prompt", "seed", "steps", "guidance", "true_cfg", "width", "height", "encoder", "backbone", "aligner",
                 "adapters", "init_image", "strength", "mask", "outpaint")
METADATA_KEYS += ("answer",)  # with reason=True (--reason): the MLLM's answer that the image was drawn from
_MEDIA_OPTIONS = {"image": "--image", "video": "--video", "audio": "--audio"}


def check_media_files(prompt: MultimodalPrompt) -> None:
    """InputError for a missing media file or an unreadable image (cheap: run before loading any model).

    Videos and audio are decoded by the encoder, which raises InputError itself.
    """
    from .media import load_image

    for part in prompt.parts:
        if part.modality == "text" or not isinstance(part.value, (str, os.PathLike)):
            continue
        path = Path(part.value).expanduser()
        if not path.is_file():
            raise InputError(f"{part.modality} file not found: {path} ({_MEDIA_OPTIONS[part.modality]})")
        if part.modality == "image":
            load_image(path)


def load_aligner(aligner: str, *, device=None, dtype=None) -> Aligner:
    """A registered aligner name, or an AlignNet folder / hub id (AlignNet.from_pretrained explains bad ones)."""
    dtype_kw = {"torch_dtype": dtype} if dtype is not None else {}
    if aligner in get_registry().components["aligner"]:
        module = load_component("aligner", aligner, **dtype_kw)
    else:
        module = AlignNet.from_pretrained(aligner, **dtype_kw)
    return module.to(device=device).eval().requires_grad_(False)


def _aligner_for(encoder: str, backbone: str) -> tuple[str, str]:
    """The registered aligner that fits (name) and the one line that says which was picked, and on which FLUX
    variant it was aligned when that is another than the one in use."""
    registry = get_registry()
    enc = registry.resolve("encoder", encoder)[0].name
    bb = registry.resolve("backbone", backbone)[0].name
    found = registry.aligners_for(enc, bb)
    if not found:
        raise PluginError(
            f"no AlignNet is registered for encoder {enc!r} with backbone {bb!r}: pass --aligner "
            f"(a folder or hub id) or train one with `x2i align`"
        )
    spec = found[0]
    aligned_on = spec.fits.get("backbone")
    where = f" (aligned on {aligned_on}, used here with {bb})" if aligned_on and aligned_on != bb else ""
    return spec.name, f"using the registered AlignNet {spec.name!r} for {enc}{where}; --aligner picks another"


class X2IPipeline:
    """A multimodal encoder, an aligner and a backbone (plus adapters) that turn prompts into images."""

    def __init__(
        self,
        encoder: MultimodalEncoder,
        aligner: Aligner,
        backbone: DiTBackbone,
        adapters: Sequence[Adapter] = (),
        *,
        names: dict[str, str] | None = None,
    ):
        aligner.check_fits(encoder, backbone)
        self.encoder, self.aligner, self.backbone = encoder, aligner, backbone
        self.adapters = tuple(adapters)
        #: with --offload on an accelerator: where the encoder runs; it waits on the CPU between prompts
        self.encoder_device: torch.device | None = None
        for adapter in self.adapters:
            adapter.apply(backbone)
        self.names = {
            "encoder": type(encoder).__name__, "backbone": type(backbone).__name__,
            "aligner": type(aligner).__name__, **(names or {}),
        }

    @classmethod
    def from_names(
        cls,
        encoder: str | None = None,
        backbone: str | None = None,
        aligner: str | None = None,
        encoder_path: str | None = None,
        backbone_path: str | None = None,
        device=None,
        dtype=None,
        offload: bool = False,
        trust_remote_code: bool = False,
        on_load: Callable[[str], None] | None = None,
        adapters: Sequence = (),
        memory: str | None = None,
        encoder_options: dict[str, Any] | None = None,
        backbone_options: dict[str, Any] | None = None,
    ) -> "X2IPipeline":
        """Load registered components by name (or folder); the aligner is checked against both before use.

        An encoder or backbone not given is the one the aligner records (`x2i align` writes it).
        `on_load(what)` is called before each component loads ("aligner", "encoder", "backbone").
        `adapters`: Adapter instances, AdapterChoice("lora", "style.safetensors", 0.8), a registered adapter
        name, or a tuple (name, checkpoint[, scale[, options]]); read before the backbone loads, applied in order.
        `memory`: high|balanced|low|lowest (x2i_core.memory; `offload=True` is balanced).
        `encoder_options`: what only some encoders take (use_audio_in_video=True: read videos' sound tracks).
        `backbone_options`: what only some backbones take (FLUX: transformer_file="finetune.safetensors").
        """
        chosen, _ = fill_models(read_record(aligner), {"encoder": encoder, "encoder_path": encoder_path,
                                                       "backbone": backbone, "backbone_path": backbone_path})
        encoder, encoder_path, backbone, backbone_path = (chosen[k] for k in ("encoder", "encoder_path", "backbone",
                                                                            "backbone_path"))
        if not (encoder and backbone):
            missing = " and ".join(k for k in ("encoder", "backbone") if not chosen[k])
            raise PluginError(f"no {missing} given, and the aligner records none: name the {missing}")
        level = resolve_memory_level(memory, offload)  # a bad level fails before anything loads
        limits.check_finite({f"the scale of {a.name} {a.pretrained or ''}".rstrip(): a.scale
                             for a in adapters or () if isinstance(a, AdapterChoice)})  # --lora F:nan, --ip-scale inf
        device, dtype = resolve_device(device, dtype)
        say = on_load or (lambda what: None)
        registry = get_registry()
        for kind, name, path in (("encoder", encoder, encoder_path), ("backbone", backbone, backbone_path)):
            spec, default = registry.resolve(kind, name)  # unknown names fail here, before any loading
            if not (path or default):
                option = "--encoder-path" if kind == "encoder" else "--backbone-path"
                raise PluginError(f"{kind} {spec.name!r} has no default checkpoint: give {option} (a folder or hub id)")
        picked_note = None
        if aligner is None:
            aligner, picked_note = _aligner_for(encoder, backbone)
        aligner_name = aligner
        # the aligner first: it is small and a wrong one should fail before gigabytes load
        say("aligner")
        align = load_aligner(aligner_name, device=device, dtype=dtype)
        say("encoder")
        extra = {"trust_remote_code": True} if trust_remote_code else {}
        if align.prompt_template is not None:
            # a converted reference AlignNet learned the reference's inputs: its encoder must give exactly those
            extra["template"] = align.prompt_template
        try:
            enc = load_component("encoder", encoder, encoder_path, device=device, dtype=dtype, **extra,
                                 **(encoder_options or {}))
        except TypeError as exc:
            if not encoder_options:
                raise
            raise PluginError(f"the encoder {encoder!r} does not take the option(s) "
                              f"{', '.join(sorted(encoder_options))}") from exc
        align.check_fits(enc)
        loaded_adapters = load_adapters(adapters)  # LoRA files are small: a bad one fails before the backbone loads
        say("backbone")
        memory_kw = {"memory": level} if memory is not None else {}  # backbones without levels take offload alone
        bb = load_component("backbone", backbone, backbone_path, device=device, dtype=dtype, offload=offload,
                            **memory_kw, **(backbone_options or {}))
        if picked_note:
            bb.notes = [picked_note, *bb.notes]
        _note_own_alignment(bb, backbone, align.made_for.get("backbone"))
        label = lambda name, path: f"{name} ({path})" if path else name  # noqa: E731
        names = {"encoder": label(encoder, encoder_path), "backbone": label(backbone, backbone_path),
                 "aligner": aligner_name}
        pipe = cls(enc, align, bb, loaded_adapters, names=names)
        # the encoder leaves the GPU after encoding (balanced, low) or is streamed layer by layer (lowest)
        pipe.encoder_device = place_encoder(enc, level, device)
        return pipe

    def __call__(
        self,
        prompt: MultimodalPrompt | str,
        num_images: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        width: int | None = None,
        height: int | None = None,
        on_step: Callable[[int, int], None] | None = None,
        on_phase: Callable[[str], None] | None = None,
        true_cfg: float | None = None,
        negative_prompt: str = "",
        reason: bool = False,
        reason_tokens: int = DEFAULT_REASON_TOKENS,
        reason_with_prompt: bool = False,
        **request_fields: Any,
    ) -> list:
        """PIL images for one prompt; image i is seeded with seed + i and carries its metadata in `.info`.

        `on_phase(name)` is called with "encode", "align", "denoise" and "decode" as each starts.
        `true_cfg` > 1 (default: the backbone's) guides away from `negative_prompt`, which goes through the same
        encoder and AlignNet (two transformer calls per step).
        `request_fields`: the other GenerationRequest fields (init_image, strength, mask, outpaint, control_images,
        reference_images, adapter_scales, inputs ...): images that enter the DiT and what adapters read.
        `reason`: the encoder answers the prompt first (greedy, at most `reason_tokens` tokens) and the answer's
        hidden states condition the image (`reason_with_prompt`: the prompt's before them); the answer is in
        each image's `.info["answer"]`. The prompt may also be a string with inline <image:...> references or
        a chat-message list (x2i_core.prompt_files).
        """
        prompt = as_prompt(prompt)
        limits.check_generation(width=width, height=height, num_images=num_images, steps=steps, guidance=guidance,
                                true_cfg=true_cfg, seed=seed, text=limits.prompt_text(prompt),
                                negative_prompt=negative_prompt)
        phase = on_phase or (lambda name: None)
        steps = int(steps if steps is not None else self.backbone.default_steps)
        guidance = float(guidance if guidance is not None else self.backbone.default_guidance)
        true_cfg = float(true_cfg if true_cfg is not None else self.backbone.default_true_cfg)
        if true_cfg < 1:
            raise InputError(f"true CFG scale must be at least 1 (1 = off), got {true_cfg:g}")
        if true_cfg > 1 and not self.backbone.supports_true_cfg:
            raise InputError(f"the backbone {self.backbone.identity} does not support true CFG (--true-cfg)")
        request = make_request(prompt, negative_prompt=negative_prompt, seed=seed, num_images=num_images,
                               **request_fields)
        width, height = request_size(request, width, height, self.backbone)
        limits.check_image_size(width, height, num_images)  # again: an init image (plus outpaint) sets the size
        limits.check_finite({"--strength": request.strength,
                             **{f"--control-scale #{i + 1}": v for i, v in enumerate(request.control_scales)},
                             **{f"the scale of {k}": v for k, v in request.adapter_scales.items()}})
        if num_images < 1:
            raise InputError(f"the number of images must be at least 1, got {num_images}")
        if steps < 1:
            raise InputError(f"the number of steps must be at least 1, got {steps}")
        self.backbone.check_size(height, width)
        if prompt.is_empty():
            raise InputError("the prompt is empty: give text, --image, --video or --audio")
        self.encoder.check_prompt(prompt)
        if reason:
            check_can_reason(self.encoder, reason_tokens)
        check_media_files(prompt)

        with torch.no_grad():
            phase("encode")
            if self.encoder_device is not None:
                self.encoder.to(self.encoder_device)
            use_cfg = true_cfg > 1
            try:
                answer, encoded = (reasoned_encoding(self.encoder, prompt, max_new_tokens=reason_tokens,
                                                     with_prompt=reason_with_prompt) if reason
                                   else (None, self.encoder.encode([prompt])))
                negative_encoded = self.encoder.encode([MultimodalPrompt.from_text(negative_prompt)]) if use_cfg else None
            finally:
                if self.encoder_device is not None:
                    self.encoder.to("cpu")
            phase("align")
            param = next(self.aligner.parameters())

            def align(enc):
                return self.aligner(enc.hidden_states.to(device=param.device), enc.attention_mask.to(param.device))

            conditioning = align(encoded).repeat(num_images)
            negative = align(negative_encoded).repeat(num_images) if use_cfg else None
        # before the latents exist: the prompt's real token count is known now
        limits.check_memory(
            limits.sampling_bytes(self.backbone, num_images, height, width, conditioning.prompt_embeds.shape[1]),
            param.device, f"{num_images} image(s) of {width}x{height}", "lower --num-images or --width/--height")
        extra: dict[str, Any] = {}
        if use_cfg:
            extra.update(negative=negative, true_cfg_scale=true_cfg)
        request = request.with_defaults(width=width, height=height, steps=steps, guidance=guidance, true_cfg=true_cfg)
        extra.update(backbone_inputs(request, self.adapters, self.backbone))
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)]
        phase("denoise")

        def step(i: int, total: int) -> None:
            if on_step is not None:
                on_step(i, total)
            if i == total:
                phase("decode")

        images = self.backbone.generate(
            conditioning, height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
            generator=generators, on_step=step, **extra,
        )
        for i, image in enumerate(images):
            image.info.update({
                "prompt": prompt.describe(), "seed": str(seed + i), "steps": str(steps),
                "guidance": f"{guidance:g}", "true_cfg": f"{true_cfg:g}", "width": str(width), "height": str(height),
                "encoder": self.names["encoder"], "backbone": self.names["backbone"],
                "aligner": self.names["aligner"], **request_metadata(request, self.adapters),
            })
            if answer is not None:
                image.info["answer"] = answer
        return images


def _note_own_alignment(backbone: DiTBackbone, name: str, recorded: str | None) -> None:
    """A backbone preset declaring `own_alignment` (Flex.1-alpha: other double blocks) gets one note line when the
    AlignNet was aligned on another backbone."""
    spec = get_registry().resolve("backbone", name)[0]
    if not spec.options.get("own_alignment") or recorded is None or recorded == spec.name:
        return
    backbone.notes.append(f"{spec.name} has its own block layout: an AlignNet aligned on {recorded} is not aligned "
                          f"to it (align one with `x2i align --backbone {spec.name}`)")


def output_paths(output: str | os.PathLike | None, count: int, seed: int = 0) -> list[Path]:
    """Where N images go: a .png file (N > 1: name-0.png, name-1.png ...) or a folder (x2i-SEED.png each)."""
    if output is None:
        output = "x2i.png"
    out = Path(output).expanduser()
    if out.is_dir() or str(output).endswith(("/", os.sep)) or out.suffix == "":
        check_output_dir(out, "-o")  # before anything loads; creates nothing
        return [out / f"x2i-{seed + i}.png" for i in range(count)]
    if out.suffix.lower() != ".png":
        raise InputError(f"the output must be a .png file or a folder, got {out}")
    check_output_file(out, "-o")
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(count)]


def save_images(
    images: Sequence,
    output: str | os.PathLike | None,
    prompt: MultimodalPrompt | str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    encoder: str | None = None,
    backbone: str | None = None,
    aligner: str | None = None,
) -> list[Path]:
    """Write PNGs with text chunks (prompt, seed, steps, guidance, size, models); all or nothing.

    Metadata comes from each image's `.info` (set by X2IPipeline); explicit arguments override it
    (a given seed is the first image's, the others get seed + i).
    """
    from PIL.PngImagePlugin import PngInfo

    first_seed = seed if seed is not None else int(images[0].info.get("seed", 0)) if images else 0
    paths = output_paths(output, len(images), first_seed)
    overrides = {"steps": steps, "guidance": guidance, "encoder": encoder, "backbone": backbone, "aligner": aligner}
    if prompt is not None:
        overrides["prompt"] = prompt.describe() if isinstance(prompt, MultimodalPrompt) else str(prompt)
    written: list[tuple[Path, Path]] = []
    try:
        for i, (image, path) in enumerate(zip(images, paths)):
            meta = {k: image.info.get(k) for k in METADATA_KEYS}
            meta.update({k: v for k, v in overrides.items() if v is not None})
            if seed is not None:
                meta["seed"] = seed + i
            meta.update(width=image.width, height=image.height)
            info = PngInfo()
            for key in METADATA_KEYS:
                if meta.get(key) is not None:
                    info.add_text(f"x2i:{key}", str(meta[key]))
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png.tmp", dir=path.parent)
            os.close(fd)
            written.append((Path(tmp), path))
            image.save(tmp, format="PNG", pnginfo=info)
        follow_umask(tmp for tmp, _ in written)  # mkstemp made them 0600
        for tmp, path in written:  # only now do the final names appear
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    return paths


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The x2i text chunks of a PNG written by save_images, without the `x2i:` prefix."""
    from PIL import Image

    with Image.open(path) as image:
        return {k[4:]: v for k, v in image.text.items() if k.startswith("x2i:")}

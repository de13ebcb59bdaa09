"""What the web UI (`x2i ui`) does, without the page: pick and cache the models, generate, chat, save PNGs.

No Gradio here: the page (x2i_cli.ui_app) passes plain values in and turns X2IError into an error on the page.
One pipeline is loaded at a time (the last one asked for); a lock serialises generation across browser tabs.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from x2i_core.errors import InputError


@dataclass(frozen=True)
class Models:
    """The model choice of one request: names or folders, with optional checkpoint overrides."""

    encoder: str = ""
    backbone: str = ""
    aligner: str = ""
    encoder_path: str = ""
    backbone_path: str = ""


@dataclass
class Adapters:
    """The page's adapter fields: a LoRA file, a ControlNet with its image, img2img/inpaint inputs, an IP-Adapter."""

    lora: str | None = None
    lora_scale: float = 1.0
    controlnet: str = ""
    control_image: str | None = None
    control_mode: str = ""
    control_scale: float = 1.0
    init_image: str | None = None
    strength: float | None = None
    mask: str | None = None
    outpaint: str = ""
    ip_adapter: str = ""
    ip_image: str | None = None
    ip_scale: float = 1.0


@dataclass
class Options:
    """Sampling options; None (or 0 for sizes and steps) means the backbone's default."""

    seed: int = 0
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    num_images: int = 1
    guidance: float | None = None
    true_cfg: float | None = None
    negative_prompt: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def call_kwargs(self) -> dict[str, Any]:
        out = {"seed": int(self.seed), "num_images": int(self.num_images), "negative_prompt": self.negative_prompt}
        for key in ("steps", "width", "height"):
            value = getattr(self, key)
            if value:  # 0 / None: the backbone's default
                out[key] = int(value)
        for key in ("guidance", "true_cfg"):
            if getattr(self, key) is not None:
                out[key] = float(getattr(self, key))
        return out


def adapter_values(adapters: Adapters) -> tuple[list, dict]:
    """(adapter choices, GenerationRequest fields), checked by the same code as `x2i generate`'s options."""
    from x2i_cli.adapter_inputs import adapter_inputs
    from x2i_cli.dit_inputs import dit_inputs

    loras = [f"{adapters.lora}:{float(adapters.lora_scale):g}"] if adapters.lora else []
    dit = {"loras": loras, "init_image": adapters.init_image, "strength": adapters.strength, "mask": adapters.mask,
           "outpaint": adapters.outpaint.strip() or None}
    choices, fields = dit_inputs(dit)
    nets = {}
    if adapters.controlnet.strip() or adapters.control_image:
        nets = {"controlnets": (adapters.controlnet.strip(),) if adapters.controlnet.strip() else (),
                "control_images": (adapters.control_image,) if adapters.control_image else (),
                "control_modes": (adapters.control_mode,) if adapters.control_mode.strip() else (),
                "control_scales": (float(adapters.control_scale),)}
    if adapters.ip_adapter.strip() or adapters.ip_image:
        nets.update(ip_adapter=adapters.ip_adapter.strip() or None, ip_image=adapters.ip_image,
                    ip_scale=float(adapters.ip_scale))
    guides, _ = adapter_inputs(nets)
    return [*choices, *guides], fields


class UIRunner:
    """The models behind the page and the folder its images go to."""

    def __init__(self, output_dir: str | Path, *, device: str | None = None, dtype: str | None = None,
                 defaults: Models | None = None):
        self.output_dir = Path(output_dir).expanduser().resolve()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.device, self.dtype = device, dtype
        self.defaults = defaults or Models()
        self.lock = threading.Lock()
        self._key: tuple | None = None
        self._pipe = None
        self._counter = itertools.count(1)

    # -- choices ----------------------------------------------------------------------------------
    def registered(self, kind: str) -> list[str]:
        from x2i_core.plugins import get_registry

        return sorted(get_registry().components[kind])

    def default_models(self) -> Models:
        """The models named at start-up, else the default world's (the shapes world when nothing else is installed)."""
        from x2i_core.plugins import get_registry

        if self.defaults.encoder or self.defaults.backbone or self.defaults.aligner:
            return self.defaults
        world = get_registry().default_world()
        if world is None:
            return self.defaults
        return Models(world.encoder, world.backbone, world.aligner)

    # -- models -------------------------------------------------------------------------------------
    def pipeline(self, models: Models, adapters: Sequence = (), on_load: Callable[[str], None] | None = None,
                 video_sound: bool = False):
        """The pipeline for these models and adapters: the cached one, or a new one (the old one is dropped).

        `video_sound`: the encoder reads videos' sound tracks too (encoders that hear, e.g. qwen2.5-omni)."""
        from x2i_cli.generate import _pick_models
        from x2i_core.generate import X2IPipeline

        key = (models, tuple(repr(a) for a in adapters), bool(video_sound))
        if key == self._key and self._pipe is not None:
            return self._pipe
        encoder, backbone, aligner, encoder_path, backbone_path = _pick_models(
            models.encoder or None, models.backbone or None, models.aligner or None, models.encoder_path or None,
            models.backbone_path or None)[:5]
        self._pipe, self._key = None, None  # free the old models before loading the new ones
        pipe = X2IPipeline.from_names(encoder, backbone, aligner, encoder_path=encoder_path,
                                      backbone_path=backbone_path, device=self.device, dtype=self.dtype,
                                      adapters=adapters, on_load=on_load,
                                      encoder_options={"use_audio_in_video": True} if video_sound else None)
        self._pipe, self._key = pipe, key
        return pipe

    # -- generation ---------------------------------------------------------------------------------
    def generate(self, prompt, models: Models, adapters: Adapters, options: Options, *, reason: bool = False,
                 video_sound: bool = False, on_load=None, on_phase=None, on_step=None) -> tuple[list[Path], str]:
        """Images for one prompt, saved as PNGs with their metadata; returns their paths and the answer (reason)."""
        from x2i_core.generate import check_media_files, save_images

        if prompt.is_empty():
            raise InputError("the prompt is empty: type some text or upload an image, a video or audio")
        check_media_files(prompt)  # a bad upload fails before any model loads
        choices, fields = adapter_values(adapters)
        with self.lock:
            pipe = self.pipeline(models, choices, on_load, video_sound)
            images = pipe(prompt, **options.call_kwargs(), reason=reason, on_phase=on_phase, on_step=on_step,
                          **fields, **options.extra)
        paths = save_images(images, self._next_path(options.seed), seed=int(options.seed))
        return paths, images[0].info.get("answer", "") if images else ""

    def new_chat(self, models: Models, options: Options, on_load=None):
        """A ChatSession on the chosen models (the encoder must be able to answer)."""
        from x2i_core.chat import ChatSession

        with self.lock:
            pipe = self.pipeline(models, (), on_load)
        kwargs = options.call_kwargs()
        kwargs.pop("num_images", None), kwargs.pop("negative_prompt", None)
        return ChatSession(pipe, **kwargs)

    def chat_send(self, session, text: str, media: Sequence[str]) -> tuple[str, list[Path]]:
        """One chat turn: the answer and the saved image(s)."""
        from x2i_core.generate import save_images

        with self.lock:
            answer, images = session.send(text, media)
        first = int(images[0].info.get("seed", 0)) if images else 0
        return answer, save_images(images, self._next_path(first, "chat"), seed=first)

    def chat_again(self, session) -> list[Path]:
        """The last chat turn drawn again with a new seed: the saved image(s)."""
        from x2i_core.generate import save_images

        with self.lock:
            _, images = session.again()
        first = int(images[0].info.get("seed", 0)) if images else 0
        return save_images(images, self._next_path(first, "chat"), seed=first)

    def _next_path(self, seed: int, prefix: str = "x2i") -> Path:
        """A new file name per request, never an earlier image's (several images: NAME-0.png, NAME-1.png ...)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.output_dir / f"{prefix}-{stamp}-{next(self._counter):04d}-seed{int(seed)}.png"

"""The x2i ComfyUI nodes: load a multimodal encoder, load an AlignNet, encode a prompt into FLUX CONDITIONING.

Comfy's own FLUX loaders, samplers, LoRAs and ControlNets do the rest: the encode node's CONDITIONING goes where a
CLIPTextEncode's would. Nodes follow Comfy's classic node API (INPUT_TYPES, RETURN_TYPES, FUNCTION, CATEGORY).
Only x2i_core's public API is used.
"""
from __future__ import annotations

from .x2i_conditioning import DEFAULT_GUIDANCE, to_comfy
from .x2i_media import audio_clips, images_from_tensor

CATEGORY = "x2i"
FROM_FOLDER = "(the folder given in checkpoint)"
DEVICES = ["auto", "cuda", "cpu", "mps"]
DTYPES = ["auto", "bf16", "fp16", "fp32"]
TEMPLATES = ["auto", "x2i", "reference"]


def _registered(kind: str) -> list[str]:
    from x2i_core import get_registry

    return sorted(get_registry().components[kind])


def _device_dtype(device: str, dtype: str):
    from x2i_core import resolve_device

    return resolve_device(None if device == "auto" else device, None if dtype == "auto" else dtype)


class X2IEncoder:
    """A loaded multimodal encoder (Comfy passes this object between nodes as X2I_ENCODER).

    `device`: where it runs when it waits on the CPU between prompts (offload), else None."""

    def __init__(self, encoder, name: str, template: str | None, device=None):
        self.encoder, self.name, self.template, self.device = encoder, name, template, device


class X2ILoadEncoder:
    """Load a multimodal LLM encoder: a registered name (its default checkpoint, or `checkpoint`) or a folder."""

    @classmethod
    def INPUT_TYPES(cls):
        choices = [FROM_FOLDER, *_registered("encoder")]
        return {
            "required": {
                "encoder": (choices, {"default": "qwen2.5-vl-7b" if "qwen2.5-vl-7b" in choices else FROM_FOLDER}),
                "checkpoint": ("STRING", {"default": "", "tooltip": "a folder or hub id overriding the name's "
                                                                   "default (a hub id needs a registered name)"}),
                "device": (DEVICES, {"default": "auto"}),
                "dtype": (DTYPES, {"default": "auto"}),
                "template": (TEMPLATES, {"default": "auto", "tooltip": "auto: what the AlignNet was trained on"}),
                "trust_remote_code": ("BOOLEAN", {"default": False}),
                "offload": ("BOOLEAN", {"default": False, "tooltip": "wait on the CPU between prompts and move to the "
                                                                     "device only to encode (frees VRAM for FLUX)"}),
            },
            "optional": {"alignnet": ("X2I_ALIGNNET",)},
        }

    RETURN_TYPES = ("X2I_ENCODER",)
    RETURN_NAMES = ("encoder",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads an x2i multimodal encoder (Qwen2.5-VL, InternVL, MiniCPM-o, Qwen2.5-Omni ...)."

    def load(self, encoder, checkpoint, device, dtype, template, trust_remote_code, offload=False, alignnet=None):
        from x2i_core import InputError, load_component

        checkpoint = checkpoint.strip() or None
        if encoder == FROM_FOLDER:
            if not checkpoint:
                raise InputError("give the encoder's folder in 'checkpoint', or pick a registered encoder")
            encoder, checkpoint = checkpoint, None  # a folder is resolved by its config's model type
        if template == "auto":
            template = alignnet.prompt_template if alignnet is not None else None
        options = {"template": template} if template else {}
        if trust_remote_code:
            options["trust_remote_code"] = True
        dev, dt = _device_dtype(device, dtype)
        # offload: loaded onto the CPU (in the device's dtype), moved to the device for each encoding only
        model = load_component("encoder", encoder, checkpoint, device="cpu" if offload else dev, dtype=dt, **options)
        if alignnet is not None:
            alignnet.check_fits(model)
        name = encoder if checkpoint is None else f"{encoder} ({checkpoint})"
        return (X2IEncoder(model, name, template, dev if offload else None),)


class X2ILoadAlignNet:
    """Load an AlignNet: a registered or official name, or an AlignNet folder / hub id."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "alignnet": ("STRING", {"default": "", "tooltip": f"a folder, a hub id or a registered name: "
                                                                  f"{', '.join(_registered('aligner')) or 'none'}"}),
                "device": (DEVICES, {"default": "auto"}),
                "dtype": (DTYPES, {"default": "auto"}),
            },
        }

    RETURN_TYPES = ("X2I_ALIGNNET",)
    RETURN_NAMES = ("alignnet",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads an x2i AlignNet (encoder hidden states -> FLUX prompt embeddings and pooled output)."

    def load(self, alignnet, device, dtype):
        from x2i_core import InputError, load_aligner

        if not alignnet.strip():
            raise InputError("give an AlignNet: a folder, a hub id or a registered name")
        dev, dt = _device_dtype(device, dtype)
        return (load_aligner(alignnet.strip(), device=dev, dtype=dt),)


def build_prompt(text: str, image=None, video_frames=None, audio=None):
    """A MultimodalPrompt from Comfy values: images, then the video (its frames), then audio clips, then the text."""
    from x2i_core import MultimodalPrompt, PromptPart

    parts = [PromptPart("image", im) for im in images_from_tensor(image)]
    frames = images_from_tensor(video_frames, "video_frames")
    if frames:
        parts.append(PromptPart("video", frames))  # encoders read a list of frames as one video
    parts += [PromptPart("audio", clip) for clip in audio_clips(audio)]
    if text and text.strip():
        parts.append(PromptPart("text", text))
    return MultimodalPrompt(tuple(parts))


class X2IEncodePrompt:
    """Encode text, images, video frames and audio into FLUX CONDITIONING (optionally: the encoder answers first)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder": ("X2I_ENCODER",),
                "alignnet": ("X2I_ALIGNNET",),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": ""}),
                "guidance": ("FLOAT", {"default": DEFAULT_GUIDANCE, "min": 0.0, "max": 100.0, "step": 0.1}),
                "reason": ("BOOLEAN", {"default": False, "tooltip": "the encoder answers the prompt first and the "
                                                                     "image is conditioned on its answer"}),
                "reason_tokens": ("INT", {"default": 128, "min": 1, "max": 4096}),
                "reason_with_prompt": ("BOOLEAN", {"default": False}),
            },
            "optional": {"image": ("IMAGE",), "video_frames": ("IMAGE",), "audio": ("AUDIO",)},
        }

    RETURN_TYPES = ("CONDITIONING", "STRING")
    RETURN_NAMES = ("conditioning", "answer")
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = "A multimodal prompt -> CONDITIONING for Comfy's FLUX models (in place of CLIPTextEncode)."

    def encode(self, encoder, alignnet, text, guidance, reason, reason_tokens, reason_with_prompt,
               image=None, video_frames=None, audio=None):
        from x2i_core import IncompatibleError, InputError

        model = encoder.encoder
        alignnet.check_fits(model)
        wanted, loaded = alignnet.prompt_template or "x2i", encoder.template or "x2i"  # None: the encoders' default
        if wanted != loaded:
            raise IncompatibleError(f"this AlignNet was trained on the {wanted!r} prompt template, the encoder was "
                                    f"loaded with {loaded!r}: connect the AlignNet to the encoder loader "
                                    f"(template auto) or pick template {wanted!r}")
        prompt = build_prompt(text, image, video_frames, audio)
        model.check_prompt(prompt)
        if reason and not model.supports_reply:
            raise IncompatibleError(f"the encoder {model.identity} cannot answer prompts: turn 'reason' off "
                                    f"or load an encoder that answers (e.g. qwen2.5-omni)")
        if reason and prompt.is_empty():
            raise InputError("the prompt is empty: there is nothing to answer")
        if encoder.device is not None:  # offload: on the device for this prompt only
            model.to(encoder.device)
        try:
            return _encode(model, alignnet, prompt, guidance, reason, int(reason_tokens), bool(reason_with_prompt))
        finally:
            if encoder.device is not None:
                model.to("cpu")


def _encode(model, alignnet, prompt, guidance, reason, reason_tokens, reason_with_prompt) -> tuple[list, str]:
    """(CONDITIONING, answer): the encoder's hidden states (of its answer, with reason) through the AlignNet."""
    import torch

    from x2i_core import InputError

    answer = ""
    with torch.no_grad():
        if reason:
            answer = model.reply(prompt, max_new_tokens=reason_tokens).strip()
            if not answer:
                raise InputError("the encoder's answer is empty: turn 'reason' off or raise reason_tokens")
            encoded = model.encode_reply(prompt, answer, with_prompt=reason_with_prompt)
        else:
            encoded = model.encode([prompt])  # an empty prompt is fine: the template alone (a negative)
        param = next(alignnet.parameters())
        conditioning = alignnet(encoded.hidden_states.to(param.device), encoded.attention_mask.to(param.device))
    return (to_comfy(conditioning, guidance), answer)


NODE_CLASS_MAPPINGS = {
    "X2ILoadEncoder": X2ILoadEncoder,
    "X2ILoadAlignNet": X2ILoadAlignNet,
    "X2IEncodePrompt": X2IEncodePrompt,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "X2ILoadEncoder": "x2i Load Encoder (multimodal LLM)",
    "X2ILoadAlignNet": "x2i Load AlignNet",
    "X2IEncodePrompt": "x2i Encode Prompt (FLUX)",
}

"""Qwen2.5-VL as an x2i MultimodalEncoder: text, images and video in, every layer's hidden states out.

Two prompt templates (option `template`):
- "x2i" (default), one template for alignment (text only) and generation: the checkpoint's own chat
  template over the whole dialogue (earlier turns, then the current user turn, parts in order; see
  x2i_core.templates.chat_messages), with no generation prompt, right-padded with a mask.
- "reference": what the reference's released Qwen2.5-VL AlignNets were trained on (train_qwenvl.py,
  datamodule_qwenvl.py): the text wrapped as `str({'Text input': ..., 'Instruction editing description':
  'no', 'image input': 'no'})` in the user turn (each user turn of a dialogue), the generation prompt added,
  LEFT-padded to `reference_length` (512) with the model's own pad-token states kept and a mask that is all
  True (the reference's unmasked mean); images resized to 128x128 (25 tokens) and videos at 128x128 pixels per
  frame, as its inference script did, with the dict its multimodal front end wrote for media.
The encoder can also answer (`reply`, greedy) with the checkpoint's lm_head, read on first use.

Images go through the image processor (the PIL one: torchvision is not available here);
videos are patchified by hand into real `pixel_values_videos` (see video.py) with
`second_per_grid_ts`, so the model's 3-D rotary positions space frames in time as in Qwen's processor.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from x2i_core import (CheckpointError, EncodedPrompt, HFEncoder, InputError, MultimodalPrompt, answer_encoding,
                      chat_messages, check_loaded, check_reserved, expand_placeholders, find_chat_template, first_line,
                      greedy_reply, load_image, quiet_transformers, reference_message,
                      stack_hidden_states, to_model, token_ids, video_frames, with_lm_head)
from x2i_core import reference_text as text_dict
from x2i_core import resolve_device as resolve

from .images import check_pixel_options, image_patches
from .video import video_patches

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
RESERVED_TOKENS = (IMAGE_TOKEN, VIDEO_TOKEN, "<|vision_start|>", "<|vision_end|>")

PIXELS_PER_TOKEN = 28 * 28  # one language-model token = a 2x2 merge of 14x14 patches
#: At most 64 tokens per image (about 224x224). The X2I reference resizes images to 128x128
#: (25 tokens); a little more keeps detail for subject-driven prompts while text, which the
#: AlignNet was trained on, still dominates the sequence. Raise it for detail, lower it for speed.
DEFAULT_MAX_PIXELS = 64 * PIXELS_PER_TOKEN
DEFAULT_MIN_PIXELS = 4 * PIXELS_PER_TOKEN
#: Per frame, at most 32 tokens per 2-frame temporal patch: 16 frames cost at most 256 tokens.
DEFAULT_VIDEO_MAX_PIXELS = 32 * PIXELS_PER_TOKEN
TEMPLATES = ("x2i", "reference")
END_OF_TURN = "<|im_end|>"
REFERENCE_IMAGE_SIZE = (128, 128)  # the reference resized every image to 128x128 (25 tokens)
REFERENCE_VIDEO_MAX_PIXELS = 128 * 128  # and sampled videos at max_pixels 128 * 128


def reference_text(text: str, has_media: bool) -> str:
    """The reference's instruction dict as `str(dict)`: its training form for text (datamodule_qwenvl.py);
    with media, the form its multimodal front end (x2i_comfyui/model.py, inference_multi_turn.py) wrote."""
    if has_media:
        return str({"Text input": text, "Instruction editing description": "", "image input": "yes"})
    return text_dict(text)


class Qwen25VLEncoder(HFEncoder):
    """Qwen2.5-VL (3B, 7B or any folder of that architecture) as a multimodal prompt encoder."""

    modalities = frozenset({"text", "image", "video"})
    supports_reply = True
    name = "qwen2.5-vl"

    def __init__(
        self,
        model,
        tokenizer,
        image_processor,
        chat_template: str,
        *,
        pretrained: str = "",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        video_max_pixels: int = DEFAULT_VIDEO_MAX_PIXELS,
        video_fps: float = 1.0,
        max_frames: int = 16,
        template: str = "x2i",
        reference_length: int = 512,
    ):
        _check_options(max_pixels, min_pixels, video_max_pixels, video_fps, max_frames, template, reference_length)
        self.template, self.reference_length = template, int(reference_length)
        self._generator = None
        self._hub: dict = {}
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template
        self.pretrained = pretrained
        self.max_pixels, self.min_pixels, self.video_max_pixels = max_pixels, min_pixels, video_max_pixels
        self.video_fps, self.max_frames = float(video_fps), int(max_frames)
        config = model.config
        self.image_token_id = config.image_token_id
        self.video_token_id = config.video_token_id

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained: str,
        *,
        device=None,
        dtype=None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        video_max_pixels: int = DEFAULT_VIDEO_MAX_PIXELS,
        video_fps: float = 1.0,
        max_frames: int = 16,
        template: str = "x2i",
        reference_length: int = 512,
        attn_implementation: str = "sdpa",
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> "Qwen25VLEncoder":
        """Load model, tokenizer, image processor and chat template from a hub id or a local folder.

        Only the base model is loaded (vision tower + language model): `reply` reads the lm_head weight on first
        use. `template`: "x2i" or "reference" (see the module docstring); `reference_length` pads the reference
        template. `trust_remote_code` is accepted and ignored: transformers' own classes run.
        """
        from transformers import AutoConfig, AutoTokenizer, Qwen2_5_VLModel
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        _check_options(max_pixels, min_pixels, video_max_pixels, video_fps, max_frames, template,
                       reference_length)  # before a long load
        device, dtype = resolve(device, dtype)
        pretrained = str(pretrained)
        hub = {"revision": revision} if revision else {}
        try:
            config = AutoConfig.from_pretrained(pretrained, **hub)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load Qwen2.5-VL from {pretrained}: {first_line(exc)}") from exc
        if config.model_type != "qwen2_5_vl":
            raise CheckpointError(
                f"{pretrained} holds a {config.model_type!r} model, not Qwen2.5-VL (model_type 'qwen2_5_vl')"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(pretrained, **hub)
            # The PIL class explicitly: the default (torchvision) class is unavailable without torchvision.
            image_processor = Qwen2VLImageProcessorPil.from_pretrained(pretrained, **hub)
            with quiet_transformers():  # its load report lists the lm_head we skip on purpose
                model, info = Qwen2_5_VLModel.from_pretrained(
                    pretrained, config=config, dtype=dtype, device_map=str(device),
                    attn_implementation=attn_implementation, output_loading_info=True, **hub,
                )
        except Exception as exc:  # hub offline, corrupt safetensors, a broken tokenizer file ...
            raise CheckpointError(f"cannot load Qwen2.5-VL from {pretrained}: {first_line(exc)}") from exc
        check_loaded(info, pretrained, "Qwen2.5-VL")
        tokenizer.padding_side = "right"
        chat_template = find_chat_template(pretrained, tokenizer, [IMAGE_TOKEN], hub)
        encoder = cls(
            model, tokenizer, image_processor, chat_template, pretrained=pretrained,
            max_pixels=max_pixels, min_pixels=min_pixels, video_max_pixels=video_max_pixels,
            video_fps=video_fps, max_frames=max_frames, template=template, reference_length=reference_length,
        )
        encoder._hub = hub
        return encoder

    # -- the prompt template ---------------------------------------------------------------------
    def render(self, prompt: MultimodalPrompt, *, add_generation_prompt: bool = False,
               template: str | None = None) -> str:
        """The dialogue as template text, one <|image_pad|>/<|video_pad|> per image/video (not yet expanded)."""
        check_reserved(prompt, RESERVED_TOKENS, "Qwen")
        if (template or self.template) == "reference":
            messages = [reference_message(turn, reference_text) for turn in prompt.turns]
            add_generation_prompt = True
        else:
            messages = chat_messages(prompt)
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt,
        )

    def prepare(self, prompts: Sequence[MultimodalPrompt | str], *, answers: Sequence[str] | None = None,
                template: str | None = None) -> dict[str, torch.Tensor]:
        """Everything the model takes for a batch, as Qwen's processor would build it. With `answers`: the x2i
        template with the generation prompt, then each answer's tokens."""
        prompts = [MultimodalPrompt.coerce(p) for p in prompts]
        if not prompts:
            raise InputError("no prompts to encode")
        reference = (template or self.template) == "reference" and answers is None
        texts, image_rows, image_grids, video_rows, video_grids, video_seconds = [], [], [], [], [], []
        merge = int(self.image_processor.merge_size) ** 2
        for prompt in prompts:
            self.check_prompt(prompt)
            text = self.render(prompt, add_generation_prompt=answers is not None,
                               template="reference" if reference else "x2i")
            image_tokens, video_tokens = [], []
            for part in prompt.media():
                if part.modality == "image":
                    rows, grid = self._image_patches(part.value, reference=reference)
                    image_rows.append(rows)
                    image_grids.append(grid)
                    image_tokens.append(math.prod(grid) // merge)
                elif part.modality == "video":
                    frames, fps = self._video_frames(part.value)
                    frame_pixels = REFERENCE_VIDEO_MAX_PIXELS if reference else self.video_max_pixels
                    rows, grid = video_patches(frames, self.image_processor, self._size(frame_pixels))
                    video_rows.append(rows)
                    video_grids.append(grid)
                    # seconds of video per temporal patch: how far apart mrope places frame pairs in time
                    video_seconds.append(self.image_processor.temporal_patch_size / fps)
                    video_tokens.append(math.prod(grid) // merge)
            text = expand_placeholders(text, IMAGE_TOKEN, image_tokens)
            texts.append(expand_placeholders(text, VIDEO_TOKEN, video_tokens))
        if answers is not None:  # tokenised apart, so the answer's tokens are exactly its own
            rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"]
                    + self.tokenizer(a, add_special_tokens=False)["input_ids"] for t, a in zip(texts, answers)]
            batch = self.tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt", padding_side="right")
        elif reference:  # left padding to at least 512, as the reference's training did (never truncated)
            batch = self.tokenizer(texts, return_tensors="pt", add_special_tokens=False, padding="max_length",
                                   max_length=max(self.reference_length, *self._lengths(texts)), padding_side="left")
        else:
            batch = self.tokenizer(
                texts, padding=True, return_tensors="pt", add_special_tokens=False, padding_side="right",
            )
        input_ids = batch["input_ids"]
        inputs = {
            "input_ids": input_ids,
            "attention_mask": batch["attention_mask"],
            # Without these types Qwen2.5-VL silently falls back to 1-D positions (platform.md).
            "mm_token_type_ids": (input_ids == self.image_token_id).int() + 2 * (input_ids == self.video_token_id).int(),
        }
        if image_rows:
            inputs["pixel_values"] = torch.from_numpy(np.concatenate(image_rows))
            inputs["image_grid_thw"] = torch.tensor(image_grids, dtype=torch.long)
        if video_rows:
            inputs["pixel_values_videos"] = torch.from_numpy(np.concatenate(video_rows))
            inputs["video_grid_thw"] = torch.tensor(video_grids, dtype=torch.long)
            inputs["second_per_grid_ts"] = torch.tensor(video_seconds, dtype=torch.float32)
        return inputs

    # -- encoding --------------------------------------------------------------------------------
    def _model_inputs(self, inputs: dict) -> dict:
        return to_model(inputs, self.device, self.dtype, ("pixel_values", "pixel_values_videos"))

    def hidden_states(self, inputs: dict) -> torch.Tensor:
        self.model.rope_deltas = None  # a cache for incremental decoding; never carry it between prompts
        out = self.model(**self._model_inputs(inputs), output_hidden_states=True, use_cache=False, return_dict=True)
        return stack_hidden_states(out, self.num_layers)

    def _lengths(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    # -- answering -------------------------------------------------------------------------------
    @torch.no_grad()
    def reply(self, prompt: MultimodalPrompt, *, max_new_tokens: int = 128) -> str:
        """The model's greedy answer to the prompt's dialogue (x2i template + generation prompt)."""
        inputs = self._model_inputs(self.prepare([MultimodalPrompt.coerce(prompt)], answers=[""]))
        generator = self._language_head()
        self.model.rope_deltas = None
        answer = greedy_reply(generator, self.tokenizer, inputs, max_new_tokens=max_new_tokens,
                              stop_ids=token_ids(self.tokenizer, [END_OF_TURN]),
                              pad_token_id=self.tokenizer.pad_token_id)
        self.model.rope_deltas = None
        return answer

    @torch.no_grad()
    def encode_reply(self, prompt: MultimodalPrompt, answer: str, *, with_prompt: bool = False) -> EncodedPrompt:
        """Hidden states of `answer` as the assistant's turn after the prompt (all tokens with `with_prompt`)."""
        inputs = self.prepare([MultimodalPrompt.coerce(prompt)], answers=[answer])
        answer_tokens = len(self.tokenizer(answer, add_special_tokens=False)["input_ids"])
        if answer_tokens == 0 and not with_prompt:
            raise InputError("the answer is empty: nothing to encode")
        return answer_encoding(self.hidden_states(inputs), answer_tokens, with_prompt=with_prompt)

    def _language_head(self):
        """Qwen2_5_VLForConditionalGeneration around the loaded base model and the checkpoint's lm_head (built once,
        on first use: no second copy of the model, and no lm_head memory unless the encoder answers)."""
        if self._generator is None:
            from transformers import Qwen2_5_VLForConditionalGeneration

            self._generator = with_lm_head(Qwen2_5_VLForConditionalGeneration, self.model, self.pretrained,
                                           ("lm_head.weight", "model.lm_head.weight"), self._hub)
        return self._generator

    # -- media -----------------------------------------------------------------------------------
    def _size(self, max_pixels: int) -> dict:
        return {"shortest_edge": self.min_pixels, "longest_edge": max_pixels}

    def _image_patches(self, value: Any, *, reference: bool = False) -> tuple[np.ndarray, list[int]]:
        image = load_image(value)
        if reference:
            image = image.resize(REFERENCE_IMAGE_SIZE)
        return image_patches(image, self.image_processor, self._size(self.max_pixels), value)

    def _video_frames(self, value: Any) -> tuple[list, float]:
        """Frames and their sampling rate, from a video file or a list of frames (taken at video_fps)."""
        return video_frames(value, fps=self.video_fps, max_frames=self.max_frames)


def _check_options(max_pixels, min_pixels, video_max_pixels, video_fps, max_frames, template="x2i",
                   reference_length=512) -> None:
    """InputError for options that cannot work."""
    if template not in TEMPLATES:
        raise InputError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    if reference_length < 1:
        raise InputError(f"need reference_length >= 1, got {reference_length}")
    check_pixel_options(max_pixels, min_pixels, video_max_pixels, video_fps, max_frames)


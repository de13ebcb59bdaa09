"""Qwen2.5-VL as an x2i MultimodalEncoder: text, images and video in, every layer's hidden states out.

One prompt template for alignment (text only) and generation: the checkpoint's own chat template
applied to a single user turn whose content lists the prompt's parts in order, with no generation
prompt. Images go through the image processor (the PIL one: torchvision is not available here);
videos are patchified by hand into real `pixel_values_videos` (see video.py) with
`second_per_grid_ts`, so the model's 3-D rotary positions space frames in time as in Qwen's processor.
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from x2i_core import (CheckpointError, EncodedPrompt, InputError, MultimodalEncoder, MultimodalPrompt,
                      expand_placeholders, first_line, load_image, sample_video)
from x2i_core import resolve_device as resolve

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


class Qwen25VLEncoder(MultimodalEncoder):
    """Qwen2.5-VL (3B, 7B or any folder of that architecture) as a multimodal prompt encoder."""

    modalities = frozenset({"text", "image", "video"})

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
    ):
        _check_options(max_pixels, min_pixels, video_max_pixels, video_fps, max_frames)
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
        attn_implementation: str = "sdpa",
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> "Qwen25VLEncoder":
        """Load model, tokenizer, image processor and chat template from a hub id or a local folder.

        Only the base model is loaded (vision tower + language model, no lm_head): we need hidden
        states, never logits. `trust_remote_code` is accepted and ignored: transformers' own classes run.
        """
        from transformers import AutoConfig, AutoTokenizer, Qwen2_5_VLModel
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        _check_options(max_pixels, min_pixels, video_max_pixels, video_fps, max_frames)  # before a long load
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
            with _quiet_transformers():  # its load report lists the lm_head we skip on purpose
                model, info = Qwen2_5_VLModel.from_pretrained(
                    pretrained, config=config, dtype=dtype, device_map=str(device),
                    attn_implementation=attn_implementation, output_loading_info=True, **hub,
                )
        except Exception as exc:  # hub offline, corrupt safetensors, a broken tokenizer file ...
            raise CheckpointError(f"cannot load Qwen2.5-VL from {pretrained}: {first_line(exc)}") from exc
        missing = sorted(info.get("missing_keys") or ()) + sorted(k for k, *_ in info.get("mismatched_keys") or ())
        if missing:  # random weights would encode garbage without any error downstream
            raise CheckpointError(
                f"{pretrained} lacks or mismatches {len(missing)} Qwen2.5-VL weights (first: {missing[0]})"
            )
        tokenizer.padding_side = "right"
        chat_template = _chat_template(pretrained, tokenizer, hub)
        return cls(
            model, tokenizer, image_processor, chat_template, pretrained=pretrained,
            max_pixels=max_pixels, min_pixels=min_pixels, video_max_pixels=video_max_pixels,
            video_fps=video_fps, max_frames=max_frames,
        )

    # -- shapes and identity ---------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """C: decoder layers + 1 (the embedding output)."""
        return self.model.config.text_config.num_hidden_layers + 1

    @property
    def hidden_size(self) -> int:
        """H: the language model's width."""
        return self.model.config.text_config.hidden_size

    @property
    def identity(self) -> str:
        """e.g. "qwen2.5-vl(Qwen/Qwen2.5-VL-7B-Instruct)": saved with AlignNets to name mismatches."""
        return f"qwen2.5-vl({self.pretrained})"

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The model's weight dtype (hidden states come out in it)."""
        return next(self.model.parameters()).dtype

    def to(self, device=None, dtype=None) -> "Qwen25VLEncoder":
        """Move (and optionally cast) the model; returns self."""
        self.model.to(device=device, dtype=dtype)
        return self

    # -- the prompt template ---------------------------------------------------------------------
    def render(self, prompt: MultimodalPrompt) -> str:
        """The prompt as template text, one <|image_pad|>/<|video_pad|> per image/video (not yet expanded)."""
        content = []
        for part in prompt.parts:
            if part.modality == "text":
                text = str(part.value)
                if not text.strip():
                    continue
                if any(token in text for token in RESERVED_TOKENS):
                    raise InputError(f"the prompt text contains a reserved Qwen token ({', '.join(RESERVED_TOKENS)})")
                if content and content[-1]["type"] == "text":  # consecutive text parts read as one sentence
                    content[-1]["text"] += " " + text
                    continue
                content.append({"type": "text", "text": text})
            else:
                content.append({"type": part.modality})
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}],
            chat_template=self.chat_template, tokenize=False, add_generation_prompt=False,
        )

    def prepare(self, prompts: Sequence[MultimodalPrompt | str]) -> dict[str, torch.Tensor]:
        """Everything the model takes for a batch, as Qwen's processor would build it, right-padded."""
        prompts = [MultimodalPrompt.coerce(p) for p in prompts]
        if not prompts:
            raise InputError("no prompts to encode")
        texts, image_rows, image_grids, video_rows, video_grids, video_seconds = [], [], [], [], [], []
        merge = int(self.image_processor.merge_size) ** 2
        for prompt in prompts:
            self.check_prompt(prompt)
            text = self.render(prompt)
            image_tokens, video_tokens = [], []
            for part in prompt.parts:
                if part.modality == "image":
                    rows, grid = self._image_patches(part.value)
                    image_rows.append(rows)
                    image_grids.append(grid)
                    image_tokens.append(math.prod(grid) // merge)
                elif part.modality == "video":
                    frames, fps = self._video_frames(part.value)
                    rows, grid = video_patches(frames, self.image_processor, self._size(self.video_max_pixels))
                    video_rows.append(rows)
                    video_grids.append(grid)
                    # seconds of video per temporal patch: how far apart mrope places frame pairs in time
                    video_seconds.append(self.image_processor.temporal_patch_size / fps)
                    video_tokens.append(math.prod(grid) // merge)
            text = expand_placeholders(text, IMAGE_TOKEN, image_tokens)
            texts.append(expand_placeholders(text, VIDEO_TOKEN, video_tokens))
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
    @torch.no_grad()
    def encode(self, prompts: Sequence[MultimodalPrompt | str]) -> EncodedPrompt:
        """All hidden states (B, layers + 1, S, H), embedding output first, and the (B, S) bool mask."""
        inputs = self.prepare(prompts)
        device = self.device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        self.model.rope_deltas = None  # a cache for incremental decoding; never carry it between prompts
        out = self.model(**inputs, output_hidden_states=True, use_cache=False, return_dict=True)
        hidden_states = torch.stack(out.hidden_states, dim=1)
        if hidden_states.shape[1] != self.num_layers:
            raise RuntimeError(f"expected {self.num_layers} hidden states, the model returned {hidden_states.shape[1]}")
        mask = inputs["attention_mask"].bool()
        # zero the padding so that what an aligner sees there never depends on the batch
        hidden_states = hidden_states * mask[:, None, :, None].to(hidden_states.dtype)
        return EncodedPrompt(hidden_states, mask)

    # -- media -----------------------------------------------------------------------------------
    def _size(self, max_pixels: int) -> dict:
        return {"shortest_edge": self.min_pixels, "longest_edge": max_pixels}

    def _image_patches(self, value: Any) -> tuple[np.ndarray, list[int]]:
        image = load_image(value)
        if max(image.size) / max(1, min(image.size)) > 200:  # Qwen's resize rule rejects these
            raise InputError(f"image {_name(value)} is too elongated ({image.size[0]}x{image.size[1]})")
        out = self.image_processor(images=[image], size=self._size(self.max_pixels), return_tensors="np")
        return np.asarray(out["pixel_values"], dtype=np.float32), [int(v) for v in out["image_grid_thw"][0]]

    def _video_frames(self, value: Any) -> tuple[list, float]:
        """Frames and their sampling rate, from a video file or a list of frames (taken at video_fps)."""
        if isinstance(value, (list, tuple)):
            if not value:
                raise InputError("a video given as frames needs at least one frame")
            step = max(1.0, len(value) / self.max_frames)  # evenly thin out long lists, as for files
            picked = [value[int(i * step)] for i in range(min(len(value), self.max_frames))]
            return [load_image(v) for v in picked], self.video_fps
        return sample_video(value, fps=self.video_fps, max_frames=self.max_frames)


def _check_options(max_pixels, min_pixels, video_max_pixels, video_fps, max_frames) -> None:
    """InputError for media options that cannot work."""
    if min_pixels < 1 or max_pixels < min_pixels or video_max_pixels < min_pixels:
        raise InputError(
            f"need 0 < min_pixels <= max_pixels and video_max_pixels, got min_pixels={min_pixels}, "
            f"max_pixels={max_pixels}, video_max_pixels={video_max_pixels}"
        )
    if video_fps <= 0 or max_frames < 1:
        raise InputError(f"need video_fps > 0 and max_frames >= 1, got video_fps={video_fps}, max_frames={max_frames}")


def _chat_template(pretrained: str, tokenizer, hub: dict) -> str:
    """The checkpoint's multimodal chat template: the processor's file, else the tokenizer's.

    The processor's template (chat_template.json, or .jinja in newer saves) is the one that places
    images and videos; a tokenizer may carry a text-only one, so each candidate must render an image.
    """
    from transformers.utils import cached_file

    candidates = []
    for fname in ("chat_template.json", "chat_template.jinja"):
        try:
            found = cached_file(pretrained, fname, _raise_exceptions_for_missing_entries=False, **hub)
        except OSError:
            found = None
        if found:
            text = Path(found).read_text(encoding="utf-8")
            candidates.append(json.loads(text)["chat_template"] if fname.endswith(".json") else text)
    own = tokenizer.chat_template
    candidates.append(own.get("default") if isinstance(own, dict) else own)
    probe = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    for template in filter(None, candidates):
        rendered = tokenizer.apply_chat_template(probe, chat_template=template, tokenize=False)
        if rendered.count(IMAGE_TOKEN) == 1:
            return template
    raise CheckpointError(f"{pretrained} has no chat template that places images (chat_template.json or tokenizer)")


@contextmanager
def _quiet_transformers():
    """Silence transformers' warnings (not errors) for the duration of a load."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _name(value: Any) -> str:
    return Path(value).name if isinstance(value, (str, Path)) else type(value).__name__

"""InternVL as an x2i MultimodalEncoder: text, images and video in, every layer's hidden states out.

Runs on transformers' native InternVL classes (the `-hf` checkpoints). Original-layout checkpoints
(OpenGVLab's `internvl_chat`, e.g. InternVL2.5-1B/4B, the paper's) are converted once into a cache folder
(see convert.py) and loaded from there; their remote code never runs.

Two prompt templates (option `template`):
- "x2i" (default): the checkpoint's chat template over the whole dialogue (chat_messages), no generation
  prompt, right padding with a mask; the same for alignment and generation.
- "reference": what the reference's released InternVL AlignNets were trained on: `str(...)` of its
  instruction dict tokenised directly (no chat template), padded to `reference_length` (512) on the
  tokenizer's own side with the model's pad-token states kept, and a mask that is all True (the reference's
  unmasked mean); images resized to 128x128 as its inference script did.
Images: one 448x448 tile each (`max_tiles` > 1 adds InternVL's dynamic tiling plus a thumbnail); a tile
is `<img>` + one `<IMG_CONTEXT>` per feature + `</img>`. Video: frames sampled at `video_fps` fed as
one-tile images, one `FrameN: <img>...</img>` line each, as InternVL's processor writes them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from x2i_core import (CheckpointError, EncodedPrompt, HFEncoder, InputError, MultimodalPrompt, answer_encoding,
                      chat_messages, check_loaded, check_reserved, find_chat_template, first_line, greedy_reply,
                      joined_text, load_image, pad_rows, quiet_transformers, reference_message,
                      stack_hidden_states, to_model, token_ids, video_frames, with_lm_head)
from x2i_core import reference_text as text_dict
from x2i_core import resolve_device as resolve

from .convert import converted_folder, is_original_layout, local_source

START, END, CONTEXT, VIDEO = "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
RESERVED_TOKENS = (START, END, CONTEXT, VIDEO, "<image>")
TEMPLATES = ("x2i", "reference")
END_OF_TURN = "<|im_end|>"
REFERENCE_IMAGE_SIZE = (128, 128)  # the reference's inference resized every image to 128x128


def reference_text(text: str, has_media: bool) -> str:
    """The reference's instruction dict as `str(dict)`: its training form for text (datamodule_internvl.py);
    with media, the dict its InternVL inference script used (no "image input" key)."""
    if has_media:
        return str({"Text input": text, "Instruction editing description": "no"})
    return text_dict(text)


class InternVLEncoder(HFEncoder):
    """InternVL (native -hf checkpoints, or original ones converted on load) as a multimodal prompt encoder."""

    modalities = frozenset({"text", "image", "video"})
    supports_reply = True
    name = "internvl"

    def __init__(self, model, tokenizer, image_processor, chat_template: str, *, pretrained: str = "",
                 weights_folder: str = "", max_tiles: int = 1, video_fps: float = 1.0, max_frames: int = 16,
                 template: str = "x2i", reference_length: int = 512, reference_padding_side: str = "right"):
        _check_options(max_tiles, video_fps, max_frames, template, reference_length)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer, self.image_processor, self.chat_template = tokenizer, image_processor, chat_template
        self.pretrained, self.weights_folder = pretrained, weights_folder or pretrained
        self.max_tiles, self.video_fps, self.max_frames = int(max_tiles), float(video_fps), int(max_frames)
        self.template, self.reference_length = template, int(reference_length)
        self.reference_padding_side = reference_padding_side
        config = model.config
        self.image_token_id = int(config.image_token_id)
        if tokenizer.convert_tokens_to_ids(CONTEXT) != self.image_token_id:
            raise CheckpointError(f"the tokenizer's {CONTEXT} id differs from the model's image_token_id")
        vision = config.vision_config
        side = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
        patch = vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple)) else vision.patch_size
        #: language-model tokens per 448x448 tile: patches per side, halved by pixel shuffle (downsample 0.5)
        self.tokens_per_tile = int((side // patch) * config.downsample_ratio) ** 2
        self.image_tag, self.video_tag = _template_tags(tokenizer, chat_template)
        self._generator = None
        self._hub: dict = {}  # hub options (revision) for reading the lm_head later

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained: str, *, device=None, dtype=None, max_tiles: int = 1,
                        video_fps: float = 1.0, max_frames: int = 16, template: str = "x2i",
                        reference_length: int = 512, attn_implementation: str = "sdpa",
                        revision: str | None = None, trust_remote_code: bool = False) -> "InternVLEncoder":
        """Load a native InternVL hub id or folder; an original (internvl_chat) one is converted into the cache
        first. Only the base model loads (the lm_head is read when `reply` first needs it); remote code never runs."""
        from transformers import AutoConfig, AutoTokenizer, InternVLModel
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        _check_options(max_tiles, video_fps, max_frames, template, reference_length)  # before a long load
        device, dtype = resolve(device, dtype)
        pretrained = str(pretrained)
        hub = {"revision": revision} if revision else {}
        folder = pretrained
        if is_original_layout(_read_config(pretrained, hub)):
            folder = str(converted_folder(local_source(pretrained, revision)))
            hub = {}
        try:
            config = AutoConfig.from_pretrained(folder, **hub)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load InternVL from {pretrained}: {first_line(exc)}") from exc
        if config.model_type != "internvl":
            raise CheckpointError(f"{pretrained} holds a {config.model_type!r} model, not InternVL "
                                  "(model_type 'internvl', or an original 'internvl_chat' checkpoint)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, **hub)
            image_processor = GotOcr2ImageProcessorPil.from_pretrained(folder, **hub)
            with quiet_transformers():  # its load report lists the lm_head we skip on purpose
                model, info = InternVLModel.from_pretrained(
                    folder, config=config, dtype=dtype, device_map=str(device),
                    attn_implementation=attn_implementation, output_loading_info=True, **hub,
                )
        except Exception as exc:  # hub offline, corrupt safetensors, a broken tokenizer file ...
            raise CheckpointError(f"cannot load InternVL from {pretrained}: {first_line(exc)}") from exc
        check_loaded(info, pretrained, "InternVL")
        padding_side = tokenizer.padding_side  # what the checkpoint's tokenizer config says: the reference relied on it
        if tokenizer.pad_token is None:
            tokenizer.pad_token = "<|endoftext|>"  # the reference's pad token for InternVL
        chat_template = find_chat_template(folder, tokenizer, [CONTEXT, "<image>"], hub, name=pretrained)
        encoder = cls(model, tokenizer, image_processor, chat_template, pretrained=pretrained, weights_folder=folder,
                      max_tiles=max_tiles, video_fps=video_fps, max_frames=max_frames, template=template,
                      reference_length=reference_length, reference_padding_side=padding_side)
        encoder._hub = hub
        return encoder

    # -- the prompt templates --------------------------------------------------------------------
    def render(self, prompt: MultimodalPrompt, *, add_generation_prompt: bool = False, template: str | None = None) -> str:
        """The prompt as text with one image tag per image and one video tag per video (not yet expanded)."""
        check_reserved(prompt, RESERVED_TOKENS, "InternVL")
        reference = (template or self.template) == "reference"
        if reference and not prompt.history:  # the reference's training: no chat template, the dict string alone
            tags = "".join((self.image_tag if p.modality == "image" else self.video_tag) + "\n" for p in prompt.media())
            return tags + reference_text(joined_text(prompt.parts), bool(prompt.media()))
        if reference:  # a dialogue: each user turn's text wrapped in the dict, through the chat template
            messages = [reference_message(turn, reference_text) for turn in prompt.turns]
            add_generation_prompt = True
        else:
            messages = chat_messages(prompt)
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def expand(self, text: str, prompt: MultimodalPrompt, *, reference: bool = False) -> tuple[str, list[np.ndarray]]:
        """Each media tag -> `<img>` + context tokens + `</img>` (a video: one `FrameN:` line per frame), and the
        pixel tiles in the same order."""
        media = prompt.media()
        pattern = "|".join(re.escape(t) for t in dict.fromkeys((self.image_tag, self.video_tag)))
        pieces = re.split(f"({pattern})", text)
        tags = pieces[1::2]
        if len(tags) != len(media):
            raise CheckpointError(f"the template wrote {len(tags)} media tags for {len(media)} images and videos")
        tiles: list[np.ndarray] = []
        out = [pieces[0]]
        for part, after in zip(media, pieces[2::2]):
            if part.modality == "image":
                pixels = self._image_tiles(part.value, reference=reference)
                tiles.append(pixels)
                out.append(START + CONTEXT * (self.tokens_per_tile * len(pixels)) + END)
            else:
                frames = self._video_frames(part.value, reference=reference)
                lines = []
                for i, frame in enumerate(frames):
                    tiles.append(frame)
                    lines.append(f"Frame{i + 1}: {START}{CONTEXT * self.tokens_per_tile}{END}")
                out.append("\n".join(lines))
            out.append(after)
        return "".join(out), tiles

    def prepare(self, prompts: Sequence[MultimodalPrompt | str], *, answers: Sequence[str] | None = None,
                template: str | None = None) -> dict[str, torch.Tensor]:
        """Everything the model takes for a batch. With `answers`: the chat template with the generation prompt,
        then each answer's tokens."""
        prompts = [MultimodalPrompt.coerce(p) for p in prompts]
        if not prompts:
            raise InputError("no prompts to encode")
        template = template or self.template
        reference = template == "reference" and answers is None
        rows, all_tiles = [], []
        for i, prompt in enumerate(prompts):
            self.check_prompt(prompt)
            text = self.render(prompt, add_generation_prompt=answers is not None,
                               template="x2i" if answers is not None else template)
            text, tiles = self.expand(text, prompt, reference=reference)
            all_tiles.extend(tiles)
            ids = self.tokenizer(text, add_special_tokens=reference)["input_ids"]
            if answers is not None:
                ids = ids + self.tokenizer(answers[i], add_special_tokens=False)["input_ids"]
            rows.append(ids)
        input_ids, mask = pad_rows(rows, self.tokenizer.pad_token_id, length=self.reference_length if reference else 0,
                                   side=self.reference_padding_side if reference else "right")
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        if all_tiles:
            inputs["pixel_values"] = torch.from_numpy(np.concatenate(all_tiles))
        return inputs

    # -- encoding --------------------------------------------------------------------------------
    def hidden_states(self, inputs: dict) -> torch.Tensor:
        out = self.model(**to_model(inputs, self.device, self.dtype), output_hidden_states=True, use_cache=False,
                         return_dict=True)
        return stack_hidden_states(out, self.num_layers)

    # -- answering -------------------------------------------------------------------------------
    @torch.no_grad()
    def reply(self, prompt: MultimodalPrompt, *, max_new_tokens: int = 128) -> str:
        """The model's greedy answer to the prompt's dialogue (chat template + generation prompt)."""
        prompt = MultimodalPrompt.coerce(prompt)
        inputs = to_model(self.prepare([prompt], answers=[""]), self.device, self.dtype)
        return greedy_reply(self._language_head(), self.tokenizer, inputs, max_new_tokens=max_new_tokens,
                            stop_ids=token_ids(self.tokenizer, [END_OF_TURN]),
                            pad_token_id=self.tokenizer.pad_token_id)

    @torch.no_grad()
    def encode_reply(self, prompt: MultimodalPrompt, answer: str, *, with_prompt: bool = False) -> EncodedPrompt:
        """Hidden states of `answer` as the assistant's turn after the prompt (all tokens with `with_prompt`)."""
        prompt = MultimodalPrompt.coerce(prompt)
        inputs = self.prepare([prompt], answers=[answer])
        answer_tokens = len(self.tokenizer(answer, add_special_tokens=False)["input_ids"])
        if answer_tokens == 0 and not with_prompt:
            raise InputError("the answer is empty: nothing to encode")
        return answer_encoding(self.hidden_states(inputs), answer_tokens, with_prompt=with_prompt)

    def _language_head(self):
        """InternVLForConditionalGeneration around the loaded base model and the checkpoint's lm_head (built once,
        on first use: no second copy of the model, and no lm_head memory unless the encoder answers)."""
        if self._generator is None:
            from transformers import InternVLForConditionalGeneration

            self._generator = with_lm_head(InternVLForConditionalGeneration, self.model, self.weights_folder,
                                           ("lm_head.weight", "language_model.lm_head.weight"), self._hub)
        return self._generator

    # -- media -----------------------------------------------------------------------------------
    def _image_tiles(self, value: Any, *, reference: bool = False) -> np.ndarray:
        image = load_image(value)
        if reference:
            image = image.resize(REFERENCE_IMAGE_SIZE)
        tiled = self.max_tiles > 1 and not reference
        out = self.image_processor(images=[image], crop_to_patches=tiled, max_patches=self.max_tiles, return_tensors="np")
        return np.asarray(out["pixel_values"], dtype=np.float32)

    def _video_frames(self, value: Any, *, reference: bool = False) -> list[np.ndarray]:
        """One tile per sampled frame (a video file, or a list of frames thinned to max_frames)."""
        frames, _ = video_frames(value, fps=self.video_fps, max_frames=self.max_frames)
        if reference:
            frames = [f.resize(REFERENCE_IMAGE_SIZE) for f in frames]
        out = self.image_processor(images=frames, crop_to_patches=False, return_tensors="np")
        return [row[None] for row in np.asarray(out["pixel_values"], dtype=np.float32)]


def _check_options(max_tiles, video_fps, max_frames, template, reference_length) -> None:
    """InputError for options that cannot work."""
    if template not in TEMPLATES:
        raise InputError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    if max_tiles < 1 or max_frames < 1 or video_fps <= 0 or reference_length < 1:
        raise InputError(f"need max_tiles >= 1, max_frames >= 1, video_fps > 0 and reference_length >= 1, got "
                         f"{max_tiles}, {max_frames}, {video_fps}, {reference_length}")


def _read_config(pretrained: str, hub: dict) -> dict:
    """config.json as plain JSON (AutoConfig would need remote code for an original checkpoint)."""
    from transformers.utils import cached_file

    try:
        found = cached_file(pretrained, "config.json", **hub)
        return json.loads(Path(found).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load InternVL from {pretrained}: {first_line(exc)}") from exc


def _template_tags(tokenizer, chat_template: str) -> tuple[str, str]:
    """(image tag, video tag) the chat template writes; a template without videos gets frames as images."""
    probe = [{"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "x"}]}]
    rendered = tokenizer.apply_chat_template(probe, chat_template=chat_template, tokenize=False)
    image = next((t for t in (CONTEXT, "<image>") if rendered.count(t) == 1), None)
    if image is None:
        raise CheckpointError("the chat template places no image tag (<IMG_CONTEXT> or <image>)")
    return image, VIDEO if rendered.count(VIDEO) == 1 else image

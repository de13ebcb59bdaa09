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

from x2i_core import (CheckpointError, EncodedPrompt, InputError, MultimodalEncoder, MultimodalPrompt,
                      chat_messages, first_line, load_image, sample_video)
from x2i_core import resolve_device as resolve

from .convert import converted_folder, is_original_layout, local_source
from .weights import lm_head_weight, quiet_transformers

START, END, CONTEXT, VIDEO = "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
RESERVED_TOKENS = (START, END, CONTEXT, VIDEO, "<image>")
TEMPLATES = ("x2i", "reference")
REFERENCE_IMAGE_SIZE = (128, 128)  # the reference's inference resized every image to 128x128


def reference_text(text: str, has_media: bool) -> str:
    """The reference's instruction dict as `str(dict)`: its training form for text (datamodule_internvl.py);
    with media, the dict its InternVL inference script used (no "image input" key)."""
    if has_media:
        return str({"Text input": text, "Instruction editing description": "no"})
    return str({"Text input": text, "Instruction editing description": "no", "image input": "no"})


class InternVLEncoder(MultimodalEncoder):
    """InternVL (native -hf checkpoints, or original ones converted on load) as a multimodal prompt encoder."""

    modalities = frozenset({"text", "image", "video"})
    supports_reply = True

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
        missing = sorted(info.get("missing_keys") or ()) + sorted(k for k, *_ in info.get("mismatched_keys") or ())
        if missing:  # random weights would encode garbage without any error downstream
            raise CheckpointError(f"{pretrained} lacks or mismatches {len(missing)} InternVL weights (first: {missing[0]})")
        padding_side = tokenizer.padding_side  # what the checkpoint's tokenizer config says: the reference relied on it
        if tokenizer.pad_token is None:
            tokenizer.pad_token = "<|endoftext|>"  # the reference's pad token for InternVL
        chat_template = _chat_template(pretrained, folder, tokenizer, hub)
        encoder = cls(model, tokenizer, image_processor, chat_template, pretrained=pretrained, weights_folder=folder,
                      max_tiles=max_tiles, video_fps=video_fps, max_frames=max_frames, template=template,
                      reference_length=reference_length, reference_padding_side=padding_side)
        encoder._hub = hub
        return encoder

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
        """e.g. "internvl(OpenGVLab/InternVL2_5-1B)": saved with AlignNets to name mismatches."""
        return f"internvl({self.pretrained})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device=None, dtype=None) -> "InternVLEncoder":
        """Move (and optionally cast) the model; returns self."""
        self.model.to(device=device, dtype=dtype)
        if self._generator is not None:
            self._generator.lm_head.to(device=device, dtype=dtype)
        return self

    # -- the prompt templates --------------------------------------------------------------------
    def render(self, prompt: MultimodalPrompt, *, add_generation_prompt: bool = False, template: str | None = None) -> str:
        """The prompt as text with one image tag per image and one video tag per video (not yet expanded)."""
        for turn in prompt.turns:
            for part in turn.parts:
                if part.modality == "text" and any(t in str(part.value) for t in RESERVED_TOKENS):
                    raise InputError(f"the prompt text contains a reserved InternVL token ({', '.join(RESERVED_TOKENS)})")
        reference = (template or self.template) == "reference"
        if reference and not prompt.history:  # the reference's training: no chat template, the dict string alone
            tags = "".join((self.image_tag if p.modality == "image" else self.video_tag) + "\n" for p in prompt.media())
            return tags + reference_text(_joined_text(prompt.parts), bool(prompt.media()))
        if reference:  # a dialogue: each user turn's text wrapped in the dict, through the chat template
            messages, add_generation_prompt = [_reference_message(turn) for turn in prompt.turns], True
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
        side = self.reference_padding_side if reference else "right"
        length = max(max(map(len, rows)), self.reference_length if reference else 0)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for r, ids in enumerate(rows):
            where = slice(length - len(ids), length) if side == "left" else slice(0, len(ids))
            input_ids[r, where] = torch.tensor(ids, dtype=torch.long)
            mask[r, where] = 1
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        if all_tiles:
            inputs["pixel_values"] = torch.from_numpy(np.concatenate(all_tiles))
        return inputs

    # -- encoding --------------------------------------------------------------------------------
    def _forward(self, inputs: dict) -> torch.Tensor:
        model_inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in model_inputs:
            model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.dtype)
        out = self.model(**model_inputs, output_hidden_states=True, use_cache=False, return_dict=True)
        hidden_states = torch.stack(out.hidden_states, dim=1)
        if hidden_states.shape[1] != self.num_layers:
            raise RuntimeError(f"expected {self.num_layers} hidden states, the model returned {hidden_states.shape[1]}")
        return hidden_states

    @torch.no_grad()
    def encode(self, prompts: Sequence[MultimodalPrompt | str]) -> EncodedPrompt:
        """All hidden states (B, layers + 1, S, H), embedding output first, and the (B, S) bool mask."""
        inputs = self.prepare(prompts)
        hidden_states = self._forward(inputs)
        mask = inputs["attention_mask"].to(hidden_states.device).bool()
        if self.template == "reference":  # the reference attended to and averaged over every row, padding included
            mask = torch.ones_like(mask)
        # zero the padding so that what an aligner sees there never depends on the batch (reference: nothing masked)
        hidden_states = hidden_states * mask[:, None, :, None].to(hidden_states.dtype)
        return EncodedPrompt(hidden_states, mask)

    # -- answering -------------------------------------------------------------------------------
    @torch.no_grad()
    def reply(self, prompt: MultimodalPrompt, *, max_new_tokens: int = 128) -> str:
        """The model's greedy answer to the prompt's dialogue (chat template + generation prompt)."""
        prompt = MultimodalPrompt.coerce(prompt)
        inputs = self.prepare([prompt], answers=[""])
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        generator = self._language_head()
        stops = [i for i in (self.tokenizer.convert_tokens_to_ids("<|im_end|>"), self.tokenizer.eos_token_id)
                 if isinstance(i, int) and i >= 0]
        out = generator.generate(**inputs, max_new_tokens=int(max_new_tokens), do_sample=False,
                                 eos_token_id=stops or None, pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    @torch.no_grad()
    def encode_reply(self, prompt: MultimodalPrompt, answer: str, *, with_prompt: bool = False) -> EncodedPrompt:
        """Hidden states of `answer` as the assistant's turn after the prompt (all tokens with `with_prompt`)."""
        prompt = MultimodalPrompt.coerce(prompt)
        inputs = self.prepare([prompt], answers=[answer])
        answer_tokens = len(self.tokenizer(answer, add_special_tokens=False)["input_ids"])
        if answer_tokens == 0 and not with_prompt:
            raise InputError("the answer is empty: nothing to encode")
        hidden_states = self._forward(inputs)
        if not with_prompt:
            hidden_states = hidden_states[:, :, hidden_states.shape[2] - answer_tokens:]
        mask = torch.ones(hidden_states.shape[0], hidden_states.shape[2], dtype=torch.bool, device=hidden_states.device)
        return EncodedPrompt(hidden_states, mask)

    def _language_head(self):
        """InternVLForConditionalGeneration around the loaded base model and the checkpoint's lm_head (built once,
        on first use: no second copy of the model, and no lm_head memory unless the encoder answers)."""
        if self._generator is None:
            from transformers import InternVLForConditionalGeneration

            with torch.device("meta"):
                generator = InternVLForConditionalGeneration(self.model.config)
            generator.model = self.model
            embed = self.model.get_input_embeddings().weight
            weight = lm_head_weight(self.weights_folder, ("lm_head.weight", "language_model.lm_head.weight"),
                                    self._hub)
            head = torch.nn.Linear(embed.shape[1], embed.shape[0], bias=False, device=embed.device, dtype=embed.dtype)
            head.weight = embed if weight is None else torch.nn.Parameter(weight.to(embed), requires_grad=False)
            generator.lm_head = head.requires_grad_(False)
            self._generator = generator.eval()
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
        if isinstance(value, (list, tuple)):
            if not value:
                raise InputError("a video given as frames needs at least one frame")
            step = max(1.0, len(value) / self.max_frames)
            frames = [load_image(value[int(i * step)]) for i in range(min(len(value), self.max_frames))]
        else:
            frames, _ = sample_video(value, fps=self.video_fps, max_frames=self.max_frames)
        if reference:
            frames = [f.resize(REFERENCE_IMAGE_SIZE) for f in frames]
        out = self.image_processor(images=frames, crop_to_patches=False, return_tensors="np")
        return [row[None] for row in np.asarray(out["pixel_values"], dtype=np.float32)]


def _joined_text(parts) -> str:
    return " ".join(str(p.value) for p in parts if p.modality == "text" and str(p.value).strip())


def _reference_message(turn) -> dict:
    """A dialogue turn for the reference template: a user turn's media, then its text wrapped in the dict."""
    if turn.role != "user":
        return {"role": turn.role, "content": [{"type": "text", "text": _joined_text(turn.parts)}]}
    content = [{"type": p.modality} for p in turn.parts if p.modality != "text"]
    content.append({"type": "text", "text": reference_text(_joined_text(turn.parts), len(content) > 0)})
    return {"role": "user", "content": content}


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


def _chat_template(pretrained: str, folder: str, tokenizer, hub: dict) -> str:
    """The multimodal chat template: the processor's file (chat_template.json/.jinja), else the tokenizer's."""
    from transformers.utils import cached_file

    candidates = []
    for fname in ("chat_template.json", "chat_template.jinja"):
        try:
            found = cached_file(folder, fname, _raise_exceptions_for_missing_entries=False, **hub)
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
        if rendered.count(CONTEXT) + rendered.count("<image>") == 1:
            return template
    raise CheckpointError(f"{pretrained} has no chat template that places images (chat_template.json or tokenizer)")

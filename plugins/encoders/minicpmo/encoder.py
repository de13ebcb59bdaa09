"""MiniCPM-o-2.6 as an x2i MultimodalEncoder: text, images, video and audio in, every layer's hidden states out.

The model is the port in modeling.py (transformers' Qwen2 + Idefics2 vision + Whisper, MiniCPM's resampler and
audio projection), loaded from the released checkpoint by key mapping (checkpoint.py); no remote code runs.

Each turn's content is MiniCPM-o's own chat format: one `(<image>./</image>)` tag per image and per video frame,
one `(<audio>./</audio>)` tag per clip, and the text, in the user's order, joined by newlines; the checkpoint's
chat template renders the dialogue; tags expand into placeholders (processing.py) whose embeddings are replaced
by the resampler's (64 per image view) and the audio projection's (25 per second). Two templates (option
`template`):
- "x2i" (default): no generation prompt, right padding with a mask; images as MiniCPM's processor does with
  `max_slice_nums` (default 1: one view, 64 tokens; 9 is the processor's own default) and the checkpoint's
  image ids; the same for alignment and generation.
- "reference": what the reference's released MiniCPM-o AlignNet was trained on (datamodule_minicpm.py): the
  text wrapped as `str({'Text input': ..., 'Instruction editing description': 'no', 'image input': 'no'})`,
  the generation prompt, padded with the pad token to `reference_length` (512) on the tokenizer's side, the pad
  states kept (mask all True); media as its inference script (one view per image, no image ids), before the
  dict, which then takes the form its multimodal front end wrote (see _reference_dict). One prompt, no dialogue.
Video: frames at `video_fps` (at most `max_frames`, 64 as the reference), each one unsliced view without id;
with `use_audio_in_video` (--video-sound) also its sound track, in MiniCPM-o's omni layout: per frame `<unit>`,
the frame and its part of the track (about a second), the turn joined without separators, the whole track
encoded as one clip whose tokens are spread over the units (as MiniCPM-o's chat merges a message's audio).
Audio: 16 kHz mono, Whisper features per 30 s piece, Whisper attending in 1 s blocks as MiniCPM-o does; each
clip on its own (as the reference's inference passed them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from x2i_core import (CheckpointError, EncodedPrompt, HFEncoder, InputError, MultimodalPrompt, answer_encoding,
                      check_reserved, first_line, greedy_reply, load_audio, load_image, pad_rows, pad_to,
                      reference_text, stack_hidden_states, video_frames, video_sound_track)
from x2i_core import resolve_device as resolve

from . import processing as P
from .checkpoint import read_image_settings, read_parts, resolve_folder
from .checkpoint import load_weights

TEMPLATES = ("x2i", "reference")


@dataclass
class AudioClip:
    """One clip's Whisper features (one array per 30 s piece) and the language-model tokens of each of its tags."""

    features: list
    tags: list
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


class MiniCPMOEncoder(HFEncoder):
    """MiniCPM-o-2.6 (or any folder of its layout) as a multimodal prompt encoder that can also answer."""

    modalities = frozenset({"text", "image", "video", "audio"})
    supports_reply = True
    name = "minicpm-o"
    #: its reference template pads with real pad tokens that its mask already counts: no template unmasks more
    unmasked_templates = frozenset()

    def __init__(self, model, tokenizer, settings, chat_template: str, feature_extractor, *, pretrained: str = "",
                 max_slice_nums: int = 1, video_fps: float = 1.0, max_frames: int = 64, template: str = "x2i",
                 reference_length: int = 512, use_audio_in_video: bool = False):
        _check_options(max_slice_nums, video_fps, max_frames, template, reference_length)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer, self.settings, self.chat_template = tokenizer, settings, chat_template
        self.feature_extractor = feature_extractor
        self.pretrained = pretrained
        self.max_slice_nums, self.video_fps, self.max_frames = int(max_slice_nums), float(video_fps), int(max_frames)
        self.template, self.reference_length = template, int(reference_length)
        self.use_audio_in_video = bool(use_audio_in_video)
        self.ids = _special_ids(tokenizer, with_unit=self.use_audio_in_video)
        parts = model.parts
        self.audio_chunk_tokens = P.tokens_per_audio_chunk(parts.audio_chunk_length, parts.audio_pool_step)

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained: str, *, device=None, dtype=None, max_slice_nums: int = 1,
                        video_fps: float = 1.0, max_frames: int = 64, template: str = "x2i",
                        reference_length: int = 512, use_audio_in_video: bool = False, revision: str | None = None,
                        trust_remote_code: bool = False) -> "MiniCPMOEncoder":
        """Load a MiniCPM-o-2.6 hub id or folder (config.json, safetensors, tokenizer, preprocessor_config.json).

        `trust_remote_code` is accepted and ignored: the port runs, never the checkpoint's code.
        """
        from accelerate import init_empty_weights
        from transformers import Qwen2TokenizerFast, WhisperFeatureExtractor

        from .modeling import MiniCPMOModel

        _check_options(max_slice_nums, video_fps, max_frames, template, reference_length)  # before a long load
        device, dtype = resolve(device, dtype)
        pretrained = str(pretrained)
        folder = resolve_folder(pretrained, revision)
        parts = read_parts(folder)
        settings = read_image_settings(folder, parts)
        try:  # the checkpoint names its own tokenizer class (remote code); its files are a Qwen2 fast tokenizer
            tokenizer = Qwen2TokenizerFast.from_pretrained(str(folder))
        except Exception as exc:
            raise CheckpointError(f"cannot load the MiniCPM-o tokenizer from {pretrained}: {first_line(exc)}") from exc
        chat_template = tokenizer.chat_template
        if isinstance(chat_template, dict):
            chat_template = chat_template.get("default")
        if not chat_template:
            raise CheckpointError(f"{pretrained} has no chat template (tokenizer_config.json chat_template)")
        _special_ids(tokenizer, with_unit=use_audio_in_video)  # a split marker fails before gigabytes load
        extractor = WhisperFeatureExtractor(**settings.audio)
        with init_empty_weights():  # parameters on the meta device: the checkpoint fills them, no random init pass
            model = MiniCPMOModel(parts)
        load_weights(model, folder, dtype, device)
        model.to(device)  # the buffers built with the modules (rotary frequencies)
        return cls(model, tokenizer, settings, chat_template, extractor, pretrained=pretrained,
                   max_slice_nums=max_slice_nums, video_fps=video_fps, max_frames=max_frames, template=template,
                   reference_length=reference_length, use_audio_in_video=use_audio_in_video)

    @property
    def text_config(self):
        """The language model's config (the port's Qwen2 part)."""
        return self.model.parts.text

    # -- the prompt template ---------------------------------------------------------------------
    def render(self, prompt: MultimodalPrompt, *, frames: Sequence[int] = (), add_generation_prompt: bool = False,
               template: str | None = None) -> str:
        """The dialogue as chat-template text with MiniCPM-o's media tags (one per video frame: `frames[i]` for the
        i-th video, 1 when not given), not yet expanded into placeholders."""
        reference = (template or self.template) == "reference"
        if reference and prompt.history:
            raise InputError("the reference template reads one prompt, not a dialogue (use template 'x2i')")
        check_reserved(prompt, P.RESERVED, "MiniCPM-o")
        frames, messages = list(frames), []
        for turn in prompt.turns:
            items, omni = [], False  # tags and text runs in order; consecutive text parts read as one sentence
            for part in turn.parts:
                if part.modality == "text":
                    text = str(part.value)
                    if not text.strip():
                        continue
                    if items and items[-1][0] == "text":
                        items[-1] = ("text", items[-1][1] + " " + text)
                    else:
                        items.append(("text", text))
                elif part.modality == "video" and self.use_audio_in_video:  # MiniCPM-o's omni units
                    items.append(("tag", (P.UNIT + P.IMAGE_TAG + P.AUDIO_TAG) * (frames.pop(0) if frames else 1)))
                    omni = True
                elif part.modality == "video":
                    items += [("tag", P.IMAGE_TAG)] * (frames.pop(0) if frames else 1)
                else:
                    items.append(("tag", P.IMAGE_TAG if part.modality == "image" else P.AUDIO_TAG))
            if reference:  # the media, then one dict string holding all the text
                text = " ".join(v for kind, v in items if kind == "text")
                items = [*(i for i in items if i[0] == "tag"), ("text", _reference_dict(text, turn.parts))]
            # a turn with a sounding video is joined without separators, as MiniCPM-o's omni chat does
            messages.append({"role": turn.role, "content": ("" if omni else "\n").join(v for _, v in items)})
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False,
            add_generation_prompt=add_generation_prompt or reference,
        )

    # -- inputs ----------------------------------------------------------------------------------
    def prepare(self, prompts: Sequence[MultimodalPrompt | str], answers: Sequence[str] | None = None) -> dict:
        """Token ids, mask and the media each row's placeholders stand for (image views, audio features)."""
        prompts = [MultimodalPrompt.coerce(p) for p in prompts]
        if not prompts:
            raise InputError("no prompts to encode")
        reference = self.template == "reference" and answers is None
        rows, image_rows, audio_rows, answer_tokens = [], [], [], []
        for i, prompt in enumerate(prompts):
            self.check_prompt(prompt)
            views, grids, clips, frames, image_count = [], [], [], [], 0
            for part in prompt.media():
                if part.modality == "image":
                    slices, grid = P.slice_image(load_image(part.value), 1 if reference else self.max_slice_nums,
                                                 self.settings.scale_resolution, self.settings.patch_size)
                    use_id = self.settings.use_image_id and not reference
                    grids.append((grid, image_count if use_id else None))
                    image_count += 1
                    views += slices
                elif part.modality == "video":
                    video = self._video_frames(part.value)
                    for frame in video:
                        views += P.slice_image(frame, 1, self.settings.scale_resolution, self.settings.patch_size)[0]
                        grids.append((None, None))
                    frames.append(len(video))
                    if self.use_audio_in_video:
                        clips += self._video_sound(part.value, len(video))
                else:
                    clips.append(self._audio_features(load_audio(part.value, self.feature_extractor.sampling_rate)))
            # answers always follow the chat template's own generation prompt, whatever the encoding template
            text = self.render(prompt, frames=frames, add_generation_prompt=answers is not None,
                               template="reference" if reference else "x2i")
            text = _expand(text, P.IMAGE_TAG, [P.image_placeholder(g, self.model.parts.query_num, k) for g, k in grids])
            text = _expand(text, P.AUDIO_TAG, [P.audio_placeholder(tokens, self.audio_chunk_tokens)
                                               for clip in clips for tokens in clip.tags])
            row = self.tokenizer(text + (answers[i] if answers else ""), add_special_tokens=False)["input_ids"]
            if answers is not None:  # how many of the row's last tokens are the answer's
                answer_tokens.append(len(row) - len(self.tokenizer(text, add_special_tokens=False)["input_ids"]))
            rows.append(row)
            image_rows.append([torch.from_numpy(P.normalise(v, self.settings.norm_mean, self.settings.norm_std))
                               for v in views])
            audio_rows.append([(clip.features, sum(clip.tags)) for clip in clips])
        inputs = self._pad(rows, image_rows, audio_rows, reference)
        if answers is not None:
            inputs["answer_tokens"] = answer_tokens
        return inputs

    def _pad(self, rows: list, image_rows: list, audio_rows: list, reference: bool) -> dict:
        """Right padding with a mask; the reference template pads to its length with real pad tokens instead."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.ids["<|endoftext|>"]
        if reference:  # the pad tokens become part of each row: real tokens to the model, never masked
            rows = [pad_to(r, pad, self.reference_length, self.tokenizer.padding_side) for r in rows]
        input_ids, mask = pad_rows(rows, pad)
        return {"input_ids": input_ids, "attention_mask": mask.bool(), "images": image_rows, "audio": audio_rows}

    # -- encoding --------------------------------------------------------------------------------
    def _embeddings(self, inputs: dict) -> torch.Tensor:
        """Token embeddings with placeholders replaced by image and audio embeddings."""
        device, model, ids = self.device, self.model, inputs["input_ids"].to(self.device)
        unk = ids == self.ids[P.UNK]
        in_audio = torch.cumsum((ids == self.ids[P.AUDIO_START]).long() - (ids == self.ids[P.AUDIO_END]).long(), 1) > 0
        views = [v for row in inputs["images"] for v in row]
        vision = model.slice_embeddings(views).flatten(0, 1) if views else None
        image_rows, audio_rows, start = [], [], 0
        for b in range(ids.shape[0]):
            positions = torch.nonzero(unk[b] & ~in_audio[b]).flatten()
            count = len(inputs["images"][b]) * model.parts.query_num
            if len(positions) != count:
                raise CheckpointError(f"the tokenizer split image placeholders ({len(positions)} of {count} tokens)")
            image_rows.append((positions, vision[start : start + count]) if count else None)
            start += count
            positions = torch.nonzero(unk[b] & in_audio[b]).flatten()
            clips = [torch.cat([model.audio_embeddings(torch.from_numpy(f).to(device)) for f in features])[:tokens]
                     for features, tokens in inputs["audio"][b]]
            embeds = torch.cat(clips) if clips else None
            if len(positions) != (0 if embeds is None else embeds.shape[0]):
                raise CheckpointError(f"{len(positions)} audio placeholder tokens for "
                                      f"{0 if embeds is None else embeds.shape[0]} audio embeddings")
            audio_rows.append((positions, embeds) if embeds is not None else None)
        return model.input_embeddings(ids, image_rows, audio_rows)

    def hidden_states(self, inputs: dict) -> torch.Tensor:
        """(B, layers + 1, S, H): every layer's hidden states, embedding output first."""
        embeds = self._embeddings(inputs)
        out = self.model.llm.model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"].to(self.device),
                                   output_hidden_states=True, use_cache=False, return_dict=True)
        return stack_hidden_states(out, self.num_layers)

    @torch.no_grad()
    def reply(self, prompt: MultimodalPrompt, *, max_new_tokens: int = 128) -> str:
        """The model's greedy answer to the prompt's dialogue (chat template + generation prompt)."""
        inputs = self.prepare([MultimodalPrompt.coerce(prompt)], answers=[""])
        stops = [self.ids[t] for t in STOP_TOKENS if t in self.ids]
        prompt_inputs = {"inputs_embeds": self._embeddings(inputs),
                         "attention_mask": inputs["attention_mask"].to(self.device)}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else stops[-1]
        return greedy_reply(self.model.llm, self.tokenizer, prompt_inputs, max_new_tokens=max_new_tokens,
                            stop_ids=stops, pad_token_id=pad)

    @torch.no_grad()
    def encode_reply(self, prompt: MultimodalPrompt, answer: str, *, with_prompt: bool = False) -> EncodedPrompt:
        """Hidden states of `answer` as the assistant's turn after the prompt (all tokens with `with_prompt`)."""
        inputs = self.prepare([MultimodalPrompt.coerce(prompt)], answers=[answer])
        answer_tokens = inputs["answer_tokens"][0]
        if answer_tokens <= 0 and not with_prompt:
            raise InputError("the answer is empty: nothing to encode")
        return answer_encoding(self.hidden_states(inputs), answer_tokens, with_prompt=with_prompt)

    # -- media -----------------------------------------------------------------------------------
    def _video_frames(self, value: Any) -> list:
        """Frames at about video_fps (at most max_frames), from a file or a list of frames."""
        return video_frames(value, fps=self.video_fps, max_frames=self.max_frames)[0]

    def _audio_features(self, samples: np.ndarray, tags: list[np.ndarray] | None = None) -> "AudioClip":
        """Whisper features of one clip (16 kHz mono) per 30 s piece, and the tokens of each of its tags: one tag
        for the whole clip, or one per part of it (`tags`: the seconds of a sounding video, read as one clip)."""
        rate, hop = self.feature_extractor.sampling_rate, self.feature_extractor.hop_length
        step = self.model.parts.audio_pool_step
        pieces = P.audio_pieces(samples, rate)
        features = [P.audio_features(piece, self.feature_extractor) for piece in pieces]
        tokens = [P.audio_token_count(len(part), hop, step) for part in (tags if tags is not None else [samples])]
        return AudioClip(features, tokens)

    def _video_sound(self, value: Any, units: int) -> list["AudioClip"]:
        """A video's sound track as one clip whose tokens are spread over `units` tags, one per frame."""
        if isinstance(value, (list, tuple)):
            raise InputError("a video given as frames has no sound track to read (use_audio_in_video)")
        track = video_sound_track(value, self.feature_extractor.sampling_rate)
        parts = P.sound_parts(track, units, self.feature_extractor.sampling_rate)
        if not parts:
            raise InputError(f"the sound track of {value} is too short for its {units} frames")
        return [self._audio_features(track, tags=parts)]


def _reference_dict(text: str, parts) -> str:
    """The reference's instruction dict: its training form for text (datamodule_minicpm.py); with media, the form
    its multimodal front end wrote (no editing description; 'image input' says whether images or video come)."""
    kinds = {p.modality for p in parts}
    if kinds <= {"text"}:
        return reference_text(text)
    seen = "yes" if kinds & {"image", "video"} else "no"
    return str({"Text input": text, "Instruction editing description": "", "image input": seen})


def _expand(text: str, tag: str, placeholders: list[str]) -> str:
    """Replace the i-th tag with placeholders[i]."""
    pieces = text.split(tag)
    if len(pieces) - 1 != len(placeholders):
        raise CheckpointError(f"the chat template wrote {len(pieces) - 1} {tag} tags for {len(placeholders)} inputs")
    return pieces[0] + "".join(p + rest for p, rest in zip(placeholders, pieces[1:]))


def _special_ids(tokenizer, with_unit: bool = False) -> dict[str, int]:
    """Ids of the markers the placeholders use; CheckpointError if the tokenizer lacks one or splits it."""
    ids = {}
    for token in (P.UNK, P.IMAGE_START, P.IMAGE_END, P.SLICE_START, P.SLICE_END, P.ID_START, P.ID_END,
                  P.AUDIO_START, P.AUDIO_END, *STOP_TOKENS, *((P.UNIT,) if with_unit else ())):
        encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise CheckpointError(f"the MiniCPM-o tokenizer does not read {token} as one token")
        ids[token] = encoded[0]
    return ids


def _check_options(max_slice_nums, video_fps, max_frames, template, reference_length) -> None:
    """InputError for options that cannot work."""
    if max_slice_nums < 1 or max_frames < 1 or video_fps <= 0:
        raise InputError(f"need max_slice_nums >= 1, max_frames >= 1 and video_fps > 0, got {max_slice_nums}, "
                         f"{max_frames}, {video_fps}")
    if template not in TEMPLATES:
        raise InputError(f"unknown template {template!r}; MiniCPM-o has {', '.join(TEMPLATES)}")
    if reference_length < 1:
        raise InputError(f"reference_length must be positive, got {reference_length}")


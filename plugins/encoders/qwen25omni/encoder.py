"""Qwen2.5-Omni's thinker as an x2i MultimodalEncoder: text, images, video, audio, and a video's own sound track.

The real checkpoints are full models (thinker + talker + token2wav); only the thinker loads (its lm_head
included, for `reply`), and the talker's speaker file (spk_dict.pt, a pickle) is never read. One prompt
template for alignment and generation: the checkpoint's chat template over the whole dialogue with no
generation prompt. Images use the PIL image processor (no torchvision), videos are patchified by hand as for
Qwen2.5-VL, audio goes through the WhisperFeatureExtractor (1 s -> 25 tokens). With `use_audio_in_video` a
video's sound track is read too, its tokens interleaved with the frames' in 2-second chunks as Qwen's
processor lays them out, and the 3-D positions (TMRoPE) align the two in time.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from x2i_core import (CheckpointError, EncodedPrompt, HFEncoder, InputError, MultimodalPrompt, answer_encoding,
                      chat_messages, check_reserved, expand_placeholders, greedy_reply, load_audio, load_image,
                      pad_rows, stack_hidden_states, to_model, video_frames, video_sound_track)
from x2i_core import resolve_device as resolve
from x2i_plugins.encoders.qwen25vl.images import check_pixel_options, image_patches
from x2i_plugins.encoders.qwen25vl.video import video_patches

from .audio import audio_features, audio_token_count, video_with_audio_tokens
from .loading import load_parts

IMAGE_TOKEN, VIDEO_TOKEN, AUDIO_TOKEN = "<|IMAGE|>", "<|VIDEO|>", "<|AUDIO|>"
AUDIO_BOS, AUDIO_EOS, VISION_BOS, VISION_EOS = "<|audio_bos|>", "<|audio_eos|>", "<|vision_bos|>", "<|vision_eos|>"
RESERVED_TOKENS = (IMAGE_TOKEN, VIDEO_TOKEN, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS, VISION_BOS, VISION_EOS)
END_OF_TURN = "<|im_end|>"

PIXELS_PER_TOKEN = 28 * 28
#: the same media budgets as the qwen2.5-vl encoder (same vision tower design): 64 tokens per image,
#: 32 per 2-frame temporal patch of a video
DEFAULT_MAX_PIXELS = 64 * PIXELS_PER_TOKEN
DEFAULT_MIN_PIXELS = 4 * PIXELS_PER_TOKEN
DEFAULT_VIDEO_MAX_PIXELS = 32 * PIXELS_PER_TOKEN
MEDIA_KEYS = ("pixel_values", "pixel_values_videos", "input_features")  # cast to the thinker's dtype


class Qwen25OmniEncoder(HFEncoder):
    """Qwen2.5-Omni (3B, 7B or any folder of that architecture): the thinker as a multimodal prompt encoder."""

    modalities = frozenset({"text", "image", "video", "audio"})
    supports_reply = True
    name = "qwen2.5-omni"

    def __init__(self, model, tokenizer, image_processor, feature_extractor, chat_template: str, *,
                 pretrained: str = "", max_pixels: int = DEFAULT_MAX_PIXELS, min_pixels: int = DEFAULT_MIN_PIXELS,
                 video_max_pixels: int = DEFAULT_VIDEO_MAX_PIXELS, video_fps: float = 1.0, max_frames: int = 16,
                 use_audio_in_video: bool = False, max_audio_seconds: float | None = None):
        check_pixel_options(max_pixels, min_pixels, video_max_pixels, video_fps, max_frames)
        self.model = model.eval().requires_grad_(False)  # Qwen2_5OmniThinkerForConditionalGeneration
        self.tokenizer, self.image_processor, self.feature_extractor = tokenizer, image_processor, feature_extractor
        self.chat_template, self.pretrained = chat_template, pretrained
        self.max_pixels, self.min_pixels, self.video_max_pixels = max_pixels, min_pixels, video_max_pixels
        self.video_fps, self.max_frames = float(video_fps), int(max_frames)
        self.use_audio_in_video = bool(use_audio_in_video)
        # the processor's window (chunk_length: 300 s for the real checkpoints) is the longest clip it reads
        self.max_audio_seconds = float(max_audio_seconds or feature_extractor.chunk_length)
        self.config = model.config
        self.pad_id = tokenizer.convert_tokens_to_ids(tokenizer.pad_token or "<|endoftext|>")
        self.end_ids = sorted({tokenizer.convert_tokens_to_ids(END_OF_TURN), self.pad_id})

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained: str, *, device=None, dtype=None, max_pixels: int = DEFAULT_MAX_PIXELS,
                        min_pixels: int = DEFAULT_MIN_PIXELS, video_max_pixels: int = DEFAULT_VIDEO_MAX_PIXELS,
                        video_fps: float = 1.0, max_frames: int = 16, use_audio_in_video: bool = False,
                        max_audio_seconds: float | None = None, attn_implementation: str = "sdpa",
                        revision: str | None = None, trust_remote_code: bool = False) -> "Qwen25OmniEncoder":
        """Load the thinker, tokenizer, image processor, audio feature extractor and chat template from a hub id
        or folder (a full Qwen2.5-Omni checkpoint or a thinker alone). `trust_remote_code` is accepted and
        ignored: transformers' own classes run."""
        check_pixel_options(max_pixels, min_pixels, video_max_pixels, video_fps, max_frames)  # before a long load
        device, dtype = resolve(device, dtype)
        parts = load_parts(str(pretrained), device=device, dtype=dtype, attn_implementation=attn_implementation,
                           revision=revision, required_tokens=(*RESERVED_TOKENS, END_OF_TURN),
                           probe_token=IMAGE_TOKEN)
        return cls(*parts, pretrained=str(pretrained), max_pixels=max_pixels, min_pixels=min_pixels,
                   video_max_pixels=video_max_pixels, video_fps=video_fps, max_frames=max_frames,
                   use_audio_in_video=use_audio_in_video, max_audio_seconds=max_audio_seconds)

    # -- the prompt template ---------------------------------------------------------------------
    def render(self, prompt: MultimodalPrompt, *, add_generation_prompt: bool = False) -> str:
        """The dialogue as template text, one placeholder per image/video/audio clip (not yet expanded)."""
        check_reserved(prompt, RESERVED_TOKENS, "Qwen2.5-Omni")
        return self.tokenizer.apply_chat_template(
            chat_messages(prompt), chat_template=self.chat_template, tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def prepare(self, prompts: Sequence[MultimodalPrompt | str], *, add_generation_prompt: bool = False,
                tails: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
        """Everything the thinker takes for a batch, as Qwen's processor would build it, right-padded.

        `tails`: token ids appended to each prompt after its template (an answer to encode)."""
        prompts = [MultimodalPrompt.coerce(p) for p in prompts]
        if not prompts:
            raise InputError("no prompts to encode")
        media = _Media()
        rows = []
        for i, prompt in enumerate(prompts):
            self.check_prompt(prompt)
            text = self.render(prompt, add_generation_prompt=add_generation_prompt)
            rows.append(self.tokenizer(self._expand(text, prompt, media), add_special_tokens=False)["input_ids"]
                        + list(tails[i] if tails else ()))
        input_ids, attention_mask = pad_rows(rows, self.pad_id)
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if media.image_rows:
            inputs["pixel_values"] = torch.from_numpy(np.concatenate(media.image_rows))
            inputs["image_grid_thw"] = torch.tensor(media.image_grids, dtype=torch.long)
        if media.video_rows:
            inputs["pixel_values_videos"] = torch.from_numpy(np.concatenate(media.video_rows))
            inputs["video_grid_thw"] = torch.tensor(media.video_grids, dtype=torch.long)
            inputs["video_second_per_grid"] = torch.tensor(media.video_seconds, dtype=torch.float32)
            inputs["use_audio_in_video"] = self.use_audio_in_video  # the position code lays out the chunks
        if media.clips:
            inputs["input_features"], inputs["feature_attention_mask"] = audio_features(media.clips, self.feature_extractor)
        return inputs

    def _expand(self, text: str, prompt: MultimodalPrompt, media: "_Media") -> str:
        """Load the prompt's media into `media` and expand each placeholder to the tokens the thinker fills."""
        merge = int(self.image_processor.merge_size) ** 2
        image_tokens, audio_tokens, video_strings = [], [], []
        for part in prompt.media():
            if part.modality == "image":
                rows, grid = self._image_patches(part.value)
                media.image_rows.append(rows)
                media.image_grids.append(grid)
                image_tokens.append(math.prod(grid) // merge)
            elif part.modality == "audio":
                clip = load_audio(part.value, sampling_rate=self.feature_extractor.sampling_rate,
                                  max_seconds=self.max_audio_seconds)
                media.clips.append(clip)
                audio_tokens.append(self._audio_tokens(clip))
            else:
                frames, fps = self._video_frames(part.value)
                rows, grid = video_patches(frames, self.image_processor, self._size(self.video_max_pixels))
                media.video_rows.append(rows)
                media.video_grids.append(grid)
                seconds = self.image_processor.temporal_patch_size / fps  # seconds of video per temporal patch
                media.video_seconds.append(seconds)
                if not self.use_audio_in_video:
                    video_strings.append(VIDEO_TOKEN * (math.prod(grid) // merge))
                    continue
                clip = self._sound_track(part.value)
                media.clips.append(clip)  # in sequence order: the thinker fills audio tokens in order
                video_strings.append(video_with_audio_tokens(
                    grid, seconds, self._audio_tokens(clip), merge_size=int(self.image_processor.merge_size),
                    position_id_per_seconds=self.config.position_id_per_seconds,
                    seconds_per_chunk=self.config.seconds_per_chunk, video_token=VIDEO_TOKEN,
                    audio_token=AUDIO_TOKEN, audio_bos=AUDIO_BOS, audio_eos=AUDIO_EOS))
        text = expand_placeholders(text, IMAGE_TOKEN, image_tokens)
        text = expand_placeholders(text, AUDIO_TOKEN, audio_tokens)  # before videos add audio tokens of their own
        return _replace_each(text, VIDEO_TOKEN, video_strings)

    # -- encoding --------------------------------------------------------------------------------
    def hidden_states(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Every layer's hidden states (B, C, S, H) of prepared inputs."""
        inputs = to_model(inputs, self.device, self.dtype, MEDIA_KEYS)
        self.model.model.rope_deltas = None  # a decoding cache; never carry it between prompts
        out = self.model.model(**inputs, output_hidden_states=True, use_cache=False, return_dict=True)
        return stack_hidden_states(out, self.num_layers)

    # -- answering -------------------------------------------------------------------------------
    @torch.no_grad()
    def reply(self, prompt: MultimodalPrompt, *, max_new_tokens: int = 128) -> str:
        """The thinker's greedy answer to the dialogue (text only: the talker is never loaded)."""
        if max_new_tokens < 1:
            raise InputError(f"the answer needs at least one token, got max_new_tokens={max_new_tokens}")
        prompt = MultimodalPrompt.coerce(prompt)
        inputs = to_model(self.prepare([prompt], add_generation_prompt=True), self.device, self.dtype, MEDIA_KEYS)
        self.model.model.rope_deltas = None
        answer = greedy_reply(self.model, self.tokenizer, inputs, max_new_tokens=max_new_tokens, stop_ids=self.end_ids,
                              pad_token_id=self.pad_id, min_new_tokens=1)
        self.model.model.rope_deltas = None
        return answer

    @torch.no_grad()
    def encode_reply(self, prompt: MultimodalPrompt, answer: str, *, with_prompt: bool = False) -> EncodedPrompt:
        """Hidden states of `answer` as the assistant's turn after `prompt` (only its tokens; with_prompt: the
        templated prompt's tokens first). Causal attention: the answer's states never see what follows it."""
        prompt = MultimodalPrompt.coerce(prompt)
        answer_ids = self.tokenizer(str(answer).strip(), add_special_tokens=False)["input_ids"]
        if not answer_ids:
            raise InputError("the answer to encode is empty")
        inputs = self.prepare([prompt], add_generation_prompt=True, tails=[answer_ids])
        return answer_encoding(self.hidden_states(inputs), len(answer_ids), with_prompt=with_prompt)

    # -- media -----------------------------------------------------------------------------------
    def _size(self, max_pixels: int) -> dict:
        return {"shortest_edge": self.min_pixels, "longest_edge": max_pixels}

    def _image_patches(self, value: Any) -> tuple[np.ndarray, list[int]]:
        return image_patches(load_image(value), self.image_processor, self._size(self.max_pixels), value)

    def _video_frames(self, value: Any) -> tuple[list, float]:
        """Frames and their sampling rate, from a video file or a list of frames (taken at video_fps)."""
        return video_frames(value, fps=self.video_fps, max_frames=self.max_frames)

    def _sound_track(self, value: Any) -> np.ndarray:
        if isinstance(value, (list, tuple)):
            raise InputError("a video given as frames has no sound track: give the file, or turn use_audio_in_video off")
        return video_sound_track(value, sampling_rate=self.feature_extractor.sampling_rate,
                                 max_seconds=self.max_audio_seconds)

    def _audio_tokens(self, clip: np.ndarray) -> int:
        return audio_token_count(math.ceil(len(clip) / int(self.feature_extractor.hop_length)))


class _Media:
    """The media of one batch, in the order the thinker consumes them (the order of their tokens)."""

    def __init__(self):
        self.image_rows, self.image_grids = [], []
        self.video_rows, self.video_grids, self.video_seconds = [], [], []
        self.clips: list[np.ndarray] = []


def _replace_each(text: str, token: str, replacements: Sequence[str]) -> str:
    """Replace the i-th occurrence of `token` with replacements[i]."""
    pieces = text.split(token)
    if len(pieces) - 1 != len(replacements):
        raise CheckpointError(f"the chat template wrote {len(pieces) - 1} {token} placeholders for {len(replacements)} videos")
    return pieces[0] + "".join(r + piece for r, piece in zip(replacements, pieces[1:]))


"""Qwen2.5-Omni's audio inputs without its processor: Whisper log-mel features and the token layout of a video
with its own sound track (TMRoPE's time-interleaved chunks).

The processor pads every clip to its feature extractor's full window (5 min for the real checkpoints) before
the STFT; we pad with just enough zeros that each real frame's window sees the same samples, which gives the
same features for the real frames (the audio tower reads only those, through `feature_attention_mask`).
"""
from __future__ import annotations

import math

import numpy as np
import torch


def audio_token_count(feature_frames: int) -> int:
    """Audio tokens the thinker inserts for a clip of `feature_frames` mel frames (two stride-2 stages: 1 s -> 25)."""
    after_conv = (feature_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def audio_features(clips: list[np.ndarray], feature_extractor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_features (N, mel bins, T), feature_attention_mask (N, T)) for N mono clips at the extractor's rate."""
    hop, n_fft = int(feature_extractor.hop_length), int(feature_extractor.n_fft)
    rows, lengths = [], []
    for clip in clips:
        frames = math.ceil(len(clip) / hop)  # the processor's mask: one frame per hop that starts inside the clip
        padded = np.concatenate([clip.astype(np.float32), np.zeros(n_fft, np.float32)])
        out = feature_extractor(
            padded, sampling_rate=feature_extractor.sampling_rate, padding="longest", truncation=False,
            return_tensors="np", return_attention_mask=False,
        )
        rows.append(np.asarray(out["input_features"][0][:, :frames], dtype=np.float32))
        lengths.append(frames)
    width = max(lengths)
    features = np.zeros((len(rows), rows[0].shape[0], width), np.float32)
    mask = np.zeros((len(rows), width), np.int64)
    for i, (row, n) in enumerate(zip(rows, lengths)):
        features[i, :, :n] = row
        mask[i, :n] = 1
    return torch.from_numpy(features), torch.from_numpy(mask)


def chunk_bounds(indices: torch.Tensor, tokens_per_chunk: int) -> list[tuple[int, int]]:
    """(start, end) slices of monotonically increasing time indices, cut where they pass each chunk boundary.

    The boundary moves by one chunk per cut, exactly as the thinker's position code cuts them: the token layout
    must follow the same cuts or tokens would get other tokens' positions without any error.
    """
    bounds, start, chunk = [], 0, 1
    for i, value in enumerate(indices.tolist()):
        if value >= chunk * tokens_per_chunk:
            bounds.append((start, i))
            start, chunk = i, chunk + 1
    bounds.append((start, len(indices)))
    return bounds


def video_with_audio_tokens(
    grid_thw: list[int], seconds_per_grid: float, audio_tokens: int, *, merge_size: int,
    position_id_per_seconds: float, seconds_per_chunk: float, video_token: str, audio_token: str,
    audio_bos: str, audio_eos: str,
) -> str:
    """What replaces a video's placeholder when its sound track is read: video and audio tokens interleaved in
    chunks of `seconds_per_chunk`, between audio_bos and audio_eos (the chat template adds the vision tags)."""
    grid_t, grid_h, grid_w = grid_thw
    per_frame = (grid_h // merge_size) * (grid_w // merge_size)
    # each temporal patch's time index, computed as the position code does (float32, then truncated)
    times = (torch.arange(grid_t) * torch.tensor(seconds_per_grid, dtype=torch.float32)
             * position_id_per_seconds).long()
    video_times = times.repeat_interleave(per_frame)
    per_chunk = int(position_id_per_seconds * seconds_per_chunk)
    video_chunks = chunk_bounds(video_times, per_chunk)
    audio_chunks = chunk_bounds(torch.arange(audio_tokens), per_chunk)
    pieces = [audio_bos]
    for j in range(max(len(video_chunks), len(audio_chunks))):
        if j < len(video_chunks):
            pieces.append(video_token * (video_chunks[j][1] - video_chunks[j][0]))
        if j < len(audio_chunks):
            pieces.append(audio_token * (audio_chunks[j][1] - audio_chunks[j][0]))
    pieces.append(audio_eos)
    return "".join(pieces)

"""Loading prompt media: images (PIL), video frames (decord) and audio (PyAV), as plain functions.

Every failure a user can cause (a missing file, a corrupt image, an unreadable video or audio clip)
raises InputError with one line that names the file. No torch here: encoders turn the results into
tensors themselves.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import InputError, first_line


def _existing_file(path: Any, what: str) -> Path:
    """The path as a Path, or InputError if it is not a readable file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} file not found: {p}")
    return p


def load_image(path_or_image: Any) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an HxWx3 uint8 array."""
    if isinstance(path_or_image, Image.Image):
        return path_or_image.convert("RGB")
    if isinstance(path_or_image, np.ndarray):
        try:
            return Image.fromarray(path_or_image).convert("RGB")
        except (TypeError, ValueError) as exc:
            raise InputError(f"cannot use an array of shape {path_or_image.shape} as an image: {first_line(exc)}") from exc
    path = _existing_file(path_or_image, "image")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated or corrupt file fails here and not in the encoder
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {first_line(exc)}") from exc


def video_frame_indices(num_frames: int, native_fps: float, fps: float = 1.0, max_frames: int = 16) -> list[int]:
    """Indices of about `fps` frames per second, evenly spread and at most `max_frames` of them."""
    if num_frames <= 0:
        return []
    if max_frames < 1:
        raise InputError(f"max_frames must be at least 1, got {max_frames}")
    if fps <= 0:
        raise InputError(f"video fps must be positive, got {fps}")
    duration = num_frames / native_fps if native_fps and native_fps > 0 else float(num_frames)
    count = max(1, min(num_frames, max_frames, math.floor(duration * fps + 0.5)))
    # the middle frame of each of `count` equal segments: even coverage, never the same frame twice
    step = num_frames / count
    return [min(num_frames - 1, int(step * (i + 0.5))) for i in range(count)]


def _probe_video(path: Path) -> None:
    """InputError unless PyAV finds a video stream: a clean message before decord logs FFmpeg noise."""
    import av

    try:
        with av.open(str(path)) as container:
            has_video = bool(container.streams.video)
    except Exception as exc:  # av.error.FFmpegError subclasses
        raise InputError(f"cannot read video {path}: {first_line(exc)}") from exc
    if not has_video:
        raise InputError(f"cannot read video {path}: it has no video stream")


def sample_video(path: Any, fps: float = 1.0, max_frames: int = 16) -> tuple[list[Image.Image], float]:
    """Frames sampled at about `fps` (at most `max_frames`, evenly spread) and the rate they represent.

    The rate (sampled frames per second of video) is what position encodings of video tokens need.
    """
    path = _existing_file(path, "video")
    _probe_video(path)
    try:
        import decord

        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        num_frames = len(reader)
        native_fps = float(reader.get_avg_fps() or 0.0)
        indices = video_frame_indices(num_frames, native_fps, fps, max_frames)
        if not indices:
            raise InputError(f"cannot read video {path}: it has no frames")
        frames = reader.get_batch(indices).asnumpy()
    except InputError:
        raise
    except Exception as exc:  # decord raises its own DECORDError (and RuntimeError) on unreadable files
        # decord's messages are C++ assertion dumps; name the file and the decoder instead
        raise InputError(f"cannot read video {path}: decord cannot decode it ({type(exc).__name__})") from exc
    duration = num_frames / native_fps if native_fps > 0 else float(num_frames)
    sampled_fps = len(indices) / duration if duration > 0 else float(fps)
    return [Image.fromarray(frame).convert("RGB") for frame in frames], sampled_fps


def sample_video_frames(path: Any, fps: float = 1.0, max_frames: int = 16) -> list[Image.Image]:
    """RGB frames sampled at about `fps` frames per second, at most `max_frames`, evenly spread."""
    return sample_video(path, fps=fps, max_frames=max_frames)[0]


def load_audio(path: Any, sampling_rate: int = 16000) -> np.ndarray:
    """The first audio stream of a file as mono float32 samples at `sampling_rate` Hz (PyAV)."""
    path = _existing_file(path, "audio")
    try:
        import av

        chunks = []
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(f"cannot read audio {path}: it has no audio stream")
            stream = container.streams.audio[0]
            # Keep the channels and average them ourselves: FFmpeg's own stereo-to-mono mix adds the
            # channels at -3 dB (x0.707 each), which can exceed [-1, 1]; a mean is what ASR front ends expect.
            resampler = av.AudioResampler(format="fltp", rate=sampling_rate)
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(None))  # flush
    except InputError:
        raise
    except Exception as exc:  # av.error.FFmpegError subclasses, and ValueError for odd layouts
        raise InputError(f"cannot read audio {path}: {first_line(exc)}") from exc
    if not chunks:
        raise InputError(f"cannot read audio {path}: it has no samples")
    return np.concatenate(chunks).astype(np.float32, copy=False)

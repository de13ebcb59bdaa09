"""Loading prompt media in one place: images (PIL), video frames (decord) and audio (PyAV), as plain functions.

Images come upright (EXIF orientation applied) and opaque (alpha flattened onto white); videos are sampled at
about 1 frame per second with a frame cap and a duration cap; audio (a wav/mp3/flac/ogg/m4a file or the sound
track of a video) comes as 16 kHz mono float32 with a duration cap. Every failure a user can cause (a missing,
empty, corrupt or unsupported file, a video without the sound track asked for, a clip over the cap) raises
InputError with one line that names the file. Silence is valid audio. No torch here: encoders make tensors.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import InputError, first_line

#: Longest video or audio clip accepted, in seconds (10 min): beyond it, one line says so before decoding.
DEFAULT_MAX_SECONDS = 600.0
SAMPLING_RATE = 16000


def _existing_file(path: Any, what: str) -> Path:
    """The path as a Path, or InputError if it is not a readable, non-empty file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} file not found: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"{what} file is empty: {p}")
    return p


def _rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: EXIF orientation applied, any transparency flattened onto white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        # converting straight to RGB would keep whatever colour hides under alpha 0 (often black)
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def load_image(path_or_image: Any) -> Image.Image:
    """An upright RGB PIL image (alpha on white) from a path, a PIL image or an HxWx3 (or HxWx4) uint8 array."""
    if isinstance(path_or_image, Image.Image):
        return _rgb(path_or_image)
    if isinstance(path_or_image, np.ndarray):
        try:
            return _rgb(Image.fromarray(path_or_image))
        except (TypeError, ValueError) as exc:
            raise InputError(f"cannot use an array of shape {path_or_image.shape} as an image: {first_line(exc)}") from exc
    path = _existing_file(path_or_image, "image")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated or corrupt file fails here and not in the encoder
            return _rgb(image)
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


def _check_duration(seconds: float, max_seconds: float | None, what: str, path: Path) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise InputError(
            f"{what} {path} is {seconds:.1f} s long, over the {max_seconds:g} s cap (max_seconds); cut it first"
        )


def sample_video(
    path: Any, fps: float = 1.0, max_frames: int = 16, max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> tuple[list[Image.Image], float]:
    """Frames sampled at about `fps` (at most `max_frames`, evenly spread) and the rate they represent.

    The rate (sampled frames per second of video) is what position encodings of video tokens need.
    A video longer than `max_seconds` is refused (None: no cap).
    """
    path = _existing_file(path, "video")
    _probe_video(path)
    try:
        import decord

        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        num_frames = len(reader)
        native_fps = float(reader.get_avg_fps() or 0.0)
        duration = num_frames / native_fps if native_fps > 0 else float(num_frames)
        _check_duration(duration, max_seconds, "video", path)
        indices = video_frame_indices(num_frames, native_fps, fps, max_frames)
        if not indices:
            raise InputError(f"cannot read video {path}: it has no frames")
        frames = reader.get_batch(indices).asnumpy()
    except InputError:
        raise
    except Exception as exc:  # decord raises its own DECORDError (and RuntimeError) on unreadable files
        # decord's messages are C++ assertion dumps; name the file and the decoder instead
        raise InputError(f"cannot read video {path}: decord cannot decode it ({type(exc).__name__})") from exc
    sampled_fps = len(indices) / duration if duration > 0 else float(fps)
    return [Image.fromarray(frame).convert("RGB") for frame in frames], sampled_fps


def sample_video_frames(path: Any, fps: float = 1.0, max_frames: int = 16) -> list[Image.Image]:
    """RGB frames sampled at about `fps` frames per second, at most `max_frames`, evenly spread."""
    return sample_video(path, fps=fps, max_frames=max_frames)[0]


def _decode_audio(path: Path, what: str, sampling_rate: int, max_seconds: float | None) -> np.ndarray:
    """The first audio stream of a media file as mono float32 at `sampling_rate` (PyAV)."""
    import av

    noun = "audio" if what == "audio" else "the sound track of video"
    chunks = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                if what == "video":
                    raise InputError(f"video {path} has no sound track (its sound was asked for)")
                raise InputError(f"cannot read audio {path}: it has no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:  # known up front: refuse before decoding
                _check_duration(float(stream.duration * stream.time_base), max_seconds, noun, path)
            # Keep the channels and average them ourselves: FFmpeg's own stereo-to-mono mix adds the
            # channels at -3 dB (x0.707 each), which can exceed [-1, 1]; a mean is what ASR front ends expect.
            resampler = av.AudioResampler(format="fltp", rate=sampling_rate)
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(None))  # flush
    except InputError:
        raise
    except Exception as exc:  # av.error.FFmpegError subclasses, and ValueError for odd layouts
        raise InputError(f"cannot read {noun} {path}: {first_line(exc)}") from exc
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise InputError(f"cannot read {noun} {path}: it has no samples")
    _check_duration(samples.size / sampling_rate, max_seconds, noun, path)
    return samples


def load_audio(path: Any, sampling_rate: int = SAMPLING_RATE,
               max_seconds: float | None = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """An audio clip as mono float32 samples at `sampling_rate` Hz (PyAV: wav, mp3, flac, ogg, m4a ...).

    A path (its first audio stream, so a video file gives its sound track), or a 1-D array (already at
    `sampling_rate`) / 2-D (channels, samples) array, averaged to mono. Silence is valid; no samples is not.
    """
    if isinstance(path, np.ndarray):
        samples = path.astype(np.float32, copy=False)
        samples = samples.mean(axis=0) if samples.ndim == 2 else samples
        if samples.ndim != 1 or samples.size == 0:
            raise InputError(f"an audio array must be 1-D (or channels x samples) and non-empty, got {path.shape}")
        _check_duration(samples.size / sampling_rate, max_seconds, "audio", Path("<array>"))
        return samples
    return _decode_audio(_existing_file(path, "audio"), "audio", sampling_rate, max_seconds)


def video_sound_track(path: Any, sampling_rate: int = SAMPLING_RATE,
                      max_seconds: float | None = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """A video's own sound track as mono float32 at `sampling_rate`; InputError naming the file if it has none."""
    return _decode_audio(_existing_file(path, "video"), "video", sampling_rate, max_seconds)

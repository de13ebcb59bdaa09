"""Media files the tests write themselves with PyAV and PIL: tones in several audio formats, a video with a
sound track, an EXIF-rotated JPEG and a transparent PNG."""
from __future__ import annotations

from fractions import Fraction

import numpy as np

# container -> audio codec PyAV's bundled FFmpeg encodes
AUDIO_FORMATS = {"wav": "pcm_s16le", "mp3": "libmp3lame", "flac": "flac", "ogg": "libopus", "m4a": "aac"}


def tone(seconds: float, rate: int, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _encode_audio(container, stream, samples: np.ndarray, rate: int, channels: int) -> None:
    """Feed mono float samples to an audio stream in 1024-sample frames (as planar float, then resampled)."""
    import av

    layout = "stereo" if channels == 2 else "mono"
    resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)
    for start in range(0, len(samples), 1024):
        block = np.repeat(samples[None, start:start + 1024], channels, axis=0)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=layout)
        frame.sample_rate = rate
        for converted in resampler.resample(frame):
            container.mux(stream.encode(converted))
    for converted in resampler.resample(None):
        container.mux(stream.encode(converted))
    container.mux(stream.encode(None))


def write_tone(path, seconds: float = 1.0, rate: int = 22050, channels: int = 2, hz: float = 440.0,
               amplitude: float = 0.5) -> str:
    """A sine tone in the container that the file name's suffix says (wav, mp3, flac, ogg, m4a)."""
    import av

    codec = AUDIO_FORMATS[str(path).rsplit(".", 1)[-1]]
    if codec == "libopus":
        rate = 48000  # Opus encodes 8/12/16/24/48 kHz only
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "stereo" if channels == 2 else "mono"
        _encode_audio(container, stream, tone(seconds, rate, hz, amplitude), rate, channels)
    return str(path)


def write_video_with_sound(path, seconds: float = 3.0, fps: int = 4, size=(64, 48), rate: int = 16000,
                           hz: float = 330.0) -> str:
    """An MPEG-4 video of flat-coloured frames with an AAC sound track (a tone) of the same length."""
    import av

    rng = np.random.default_rng(0)
    width, height = size
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i in range(int(seconds * fps)):
            frame = np.empty((height, width, 3), np.uint8)
            frame[:] = rng.integers(0, 256, 3, dtype=np.uint8)
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            container.mux(video.encode(vf))
        container.mux(video.encode(None))
        _encode_audio(container, audio, tone(seconds, rate, hz), rate, 1)
    return str(path)


def write_exif_rotated_jpeg(path, size=(40, 20)) -> str:
    """A landscape JPEG whose EXIF orientation (6: rotate 90 degrees clockwise) makes it portrait."""
    from PIL import Image

    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, size[0] // 2, size[1]))  # left half blue: shows which way it turned
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, format="JPEG", exif=exif.tobytes(), quality=95)
    return str(path)


def write_transparent_png(path, size=(16, 16)) -> str:
    """An RGBA PNG: fully transparent black on the left, opaque green on the right."""
    from PIL import Image

    pixels = np.zeros((size[1], size[0], 4), np.uint8)
    pixels[:, size[0] // 2:] = (0, 255, 0, 255)
    Image.fromarray(pixels, "RGBA").save(path)
    return str(path)

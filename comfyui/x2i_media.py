"""ComfyUI's media values -> what x2i encoders read: IMAGE tensors -> PIL images, AUDIO dicts -> 16 kHz mono arrays.

Comfy's formats (read from ComfyUI's nodes.py LoadImage and comfy_extras/nodes_audio.py LoadAudio):
- IMAGE: a torch tensor (B, H, W, C), float in [0, 1], C = 3 (RGB); a batch of B images (or B video frames).
- AUDIO: a dict {"waveform": tensor (B, C, T) float in [-1, 1], "sample_rate": int}; B clips of C channels.
x2i's encoders take PIL images, a list of PIL frames as one video, and 1-D float32 arrays at 16 kHz as audio.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from x2i_core import InputError

#: the rate every x2i audio encoder reads (Whisper front ends)
SAMPLING_RATE = 16000


def images_from_tensor(images, what: str = "IMAGE") -> list[Image.Image]:
    """One RGB PIL image per batch item of a Comfy IMAGE tensor (B, H, W, C) in [0, 1]."""
    if images is None:
        return []
    shape = tuple(images.shape)
    if len(shape) == 3:  # a single image without its batch axis
        images = images.unsqueeze(0)
        shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] not in (1, 3, 4) or 0 in shape:
        raise InputError(f"{what} must be a (batch, height, width, channels) tensor with 1, 3 or 4 channels, "
                         f"got shape {shape}")
    pixels = (images.detach().float().cpu().clamp(0, 1) * 255).round().byte()
    out = []
    for item in pixels.numpy():
        if item.shape[-1] == 1:
            item = np.repeat(item, 3, axis=-1)
        mode = "RGBA" if item.shape[-1] == 4 else "RGB"
        out.append(Image.fromarray(np.ascontiguousarray(item), mode).convert("RGB"))
    return out


def resample(samples: np.ndarray, rate: int, target: int = SAMPLING_RATE) -> np.ndarray:
    """Mono float32 samples at `rate` -> `target` Hz with FFmpeg's resampler (PyAV), the one media loading uses."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if rate == target:
        return samples
    import av

    frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
    frame.sample_rate = int(rate)
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=int(target))
    chunks = [f.to_ndarray()[0] for f in resampler.resample(frame)]
    chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]  # flush what the filter holds back
    return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


def audio_clips(audio) -> list[np.ndarray]:
    """One 16 kHz mono float32 array per clip of a Comfy AUDIO dict (channels averaged, as x2i's media loading)."""
    if audio is None:
        return []
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError("AUDIO must be a dict with 'waveform' (batch, channels, samples) and 'sample_rate'")
    waveform, rate = audio["waveform"], int(audio["sample_rate"])
    if rate <= 0:
        raise InputError(f"AUDIO sample_rate must be positive, got {rate}")
    shape = tuple(waveform.shape)
    if len(shape) == 2:  # (channels, samples) without the batch axis
        waveform = waveform.unsqueeze(0)
        shape = tuple(waveform.shape)
    if len(shape) != 3 or shape[-1] == 0:
        raise InputError(f"AUDIO waveform must be (batch, channels, samples) with samples, got shape {shape}")
    clips = []
    for clip in waveform.detach().float().cpu().numpy():
        clips.append(resample(clip.mean(axis=0), rate))
    return clips

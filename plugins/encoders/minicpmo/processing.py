"""MiniCPM-o's input layout, rewritten from its documented rules: image slicing (a downscaled overview plus a
grid of up to `max_slice_nums` crops), the token placeholders of images and audio, and audio features.

Placeholders (the tokens whose embeddings the model replaces):
- image: `<image_id>k</image_id>` (when use_image_id) + `<image>` + query_num x `<unk>` + `</image>`, then one
  `<slice>` + query_num x `<unk>` + `</slice>` per crop, crops of a row side by side, rows joined by a newline;
- audio: per second (one 1 s chunk), `<|audio_start|>` + up to 25 x `<unk>` + `<|audio_end|>`.
No torch at import: functions take and return numpy arrays and PIL images.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

IMAGE_START, IMAGE_END, SLICE_START, SLICE_END = "<image>", "</image>", "<slice>", "</slice>"
ID_START, ID_END, UNK = "<image_id>", "</image_id>", "<unk>"
AUDIO_START, AUDIO_END = "<|audio_start|>", "<|audio_end|>"
UNIT = "<unit>"  # opens one second of a sounding video (a frame and its sound) in MiniCPM-o's omni layout
#: what the chat messages carry for each medium before expansion (MiniCPM-o's own tags)
IMAGE_TAG, AUDIO_TAG = "(<image>./</image>)", "(<audio>./</audio>)"
#: strings a user's text must not contain: they would be read as placeholders
RESERVED = (IMAGE_START, IMAGE_END, SLICE_START, SLICE_END, ID_START, ID_END, UNK, AUDIO_START, AUDIO_END,
            IMAGE_TAG, AUDIO_TAG, UNIT, "<|spk_bos|>", "<|spk_eos|>")
AUDIO_MAX_SECONDS = 30  # one Whisper window; longer clips are cut into 30 s pieces


# -- images ----------------------------------------------------------------------------------------
def _divisible(length: float, patch: int) -> int:
    return max(round(length / patch) * patch, patch)


def best_resize(size: tuple, scale: int, patch: int, allow_upscale: bool = False) -> tuple[int, int]:
    """(w, h) of about scale x scale pixels at the image's aspect ratio (only shrinking unless allowed), in patches."""
    width, height = size
    if width * height > scale * scale or allow_upscale:
        ratio = width / height
        height = int(scale / math.sqrt(ratio))
        width = int(height * ratio)
    return _divisible(width, patch), _divisible(height, patch)


def slice_grid(size: tuple, max_slices: int, scale: int) -> list[int] | None:
    """[columns, rows] of crops for an image of `size`, or None when one view is enough.

    The number of crops follows the area (in units of scale x scale, at most max_slices, with its neighbours
    as candidates); among the factorisations the one whose aspect ratio is closest (in log) to the image's wins.
    """
    width, height = size
    multiple = min(math.ceil(width * height / (scale * scale)), max_slices)
    if multiple <= 1:
        return None
    log_ratio = math.log(width / height)
    best, best_error = [1, 1], float("inf")
    for count in (multiple - 1, multiple, multiple + 1):
        if count == 1 or count > max_slices:
            continue
        for cols in range(1, count + 1):
            if count % cols:
                continue
            error = abs(log_ratio - math.log(cols / (count // cols)))
            if error < best_error:
                best, best_error = [cols, count // cols], error
    return best


def slice_image(image: Image.Image, max_slices: int, scale: int, patch: int) -> tuple[list[Image.Image], list | None]:
    """The overview image followed by its crops (row by row), and the grid (None: no crops)."""
    grid = slice_grid(image.size, max_slices, scale)
    if grid is None:  # small enough: one view, resized (up if needed) to whole patches
        return [image.resize(best_resize(image.size, scale, patch, True), Image.Resampling.BICUBIC)], None
    overview = image.resize(best_resize(image.size, scale, patch), Image.Resampling.BICUBIC)
    cols, rows = grid
    # the whole image resized so that each crop is itself about scale x scale, in whole patches
    crop_w, crop_h = _divisible(image.size[0], cols) / cols, _divisible(image.size[1], rows) / rows
    crop_size = best_resize((crop_w, crop_h), scale, patch, True)
    refined = image.resize((crop_size[0] * cols, crop_size[1] * rows), Image.Resampling.BICUBIC)
    step_w, step_h = int(refined.size[0] / cols), int(refined.size[1] / rows)
    crops = [refined.crop((x, y, x + step_w, y + step_h))
             for y in range(0, refined.size[1], step_h) for x in range(0, refined.size[0], step_w)]
    return [overview, *crops], grid


def normalise(image: Image.Image, mean, std) -> np.ndarray:
    """(3, H, W) float32 in MiniCPM's normalisation ((x / 255 - mean) / std)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return array.transpose(2, 0, 1).copy()


def image_placeholder(grid: list | None, query_num: int, image_id: int | None) -> str:
    """The tokens an image becomes: optional id, the overview, then the crops of the grid."""
    text = f"{ID_START}{image_id}{ID_END}" if image_id is not None else ""
    text += IMAGE_START + UNK * query_num + IMAGE_END
    if grid:
        cols, rows = grid
        text += "\n".join((SLICE_START + UNK * query_num + SLICE_END) * cols for _ in range(rows))
    return text


# -- audio -----------------------------------------------------------------------------------------
def audio_pieces(samples: np.ndarray, sampling_rate: int) -> list[np.ndarray]:
    """The clip in pieces of at most 30 s (one Whisper window each)."""
    size = AUDIO_MAX_SECONDS * sampling_rate
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def sound_parts(track: np.ndarray, units: int, sampling_rate: int) -> list[np.ndarray]:
    """A video's sound track cut into `units` consecutive parts of equal length, one per sampled frame (about a
    second each at 1 fps: MiniCPM-o's omni layout pairs a frame with its second), the last taking the rest.

    Cuts fall on multiples of 40 ms (640 samples at 16 kHz: 4 mel frames, 2 Whisper frames, 1 token), so the
    parts' token counts add up to exactly the tokens of the whole track, which is encoded as one clip.
    Empty when the track is too short to give each frame a part.
    """
    quantum = sampling_rate * 4 // 100
    step = len(track) // max(1, units) // quantum * quantum
    if step <= 0:
        return []
    cuts = [i * step for i in range(units)] + [len(track)]
    return [track[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def audio_token_count(num_samples: int, hop_length: int, pool_step: int) -> int:
    """Language-model tokens of one piece: mel frames, halved by Whisper's stride-2 conv, then pooled."""
    frames = math.ceil(num_samples / hop_length)
    frames = (frames - 1) // 2 + 1
    return (frames - pool_step) // pool_step + 1


def audio_placeholder(tokens: int, per_chunk: int) -> str:
    """`tokens` <unk> in chunks of `per_chunk` (one second each), each between <|audio_start|> and <|audio_end|>."""
    chunks = [min(per_chunk, tokens - start) for start in range(0, tokens, per_chunk)]
    return "".join(AUDIO_START + UNK * n + AUDIO_END for n in chunks)


def tokens_per_audio_chunk(chunk_seconds: float, pool_step: int) -> int:
    """Tokens in one chunk of `chunk_seconds` (100 mel frames a second): 25 for 1 s."""
    frames = int(chunk_seconds * 100)
    return ((frames - 1) // 2 + 1 - pool_step) // pool_step + 1


def audio_features(piece: np.ndarray, extractor) -> np.ndarray:
    """(mel bins, frames) log-mel features of one piece, computed over the 30 s window and cut to the piece."""
    out = extractor(piece, sampling_rate=extractor.sampling_rate, return_attention_mask=True, padding="max_length",
                    return_tensors="np")
    frames = int(out["attention_mask"][0].sum())
    return np.asarray(out["input_features"][0][:, :frames], dtype=np.float32)

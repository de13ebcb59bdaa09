"""What a run may ask for, checked before anything is allocated: finite numbers, sizes, step counts, image
counts, prompt lengths, and an estimate of working memory against what the device has free.

The CLI and the Python API call the same checks, so both refuse the same inputs with one InputError line.
Why fixed caps as well as the estimate: the estimate needs the models loaded (their widths and dtype), while
the caps refuse absurd requests (a 100000-pixel side, a million steps, NaN guidance) at once, before
anything loads. Nothing here imports torch at module level, so the CLI can check options cheaply.
"""
from __future__ import annotations

import math
import os
from typing import Any

from .errors import InputError

#: pixels per image side. FLUX's VAE and position embeddings were trained up to about 2 MP; 4096 x 4096 is
#: 16 MP and needs about 34 GB for the VAE decode alone in bf16, already more than most GPUs hold.
MAX_SIDE = 4096
#: images per call
MAX_IMAGES = 64
#: num_images x width x height per call: 64 images at 1024 x 1024, or 4 at 4096 x 4096
MAX_PIXELS_PER_CALL = 64 * 1024 * 1024
#: sampling steps: flow-matching schedulers are trained on 1000 timesteps, so more steps only repeat them
MAX_STEPS = 1000
#: characters of a text prompt (and of a negative prompt): a bound on the encoder's tokens per text
MAX_PROMPT_CHARS = 10_000
#: --teacher-max-length: the teacher's T5 pads every caption to this many tokens (FLUX.1-dev: 512)
MAX_TEXT_TOKENS = 4096
#: set to "off" to skip the memory estimate (it is an estimate: it can be wrong for an unusual backbone)
MEMORY_CHECK_ENV = "X2I_MEMORY_CHECK"

_GIB = 1024**3


def check_finite(values: dict[str, Any]) -> None:
    """InputError naming the first option whose value is NaN or infinite (click parses "nan" and "inf" as floats)."""
    for option, value in values.items():
        if value is not None and not math.isfinite(float(value)):
            raise InputError(f"{option} must be a finite number, got {value}")


def check_range(option: str, value: int | None, low: int, high: int, why: str = "") -> None:
    """InputError unless low <= value <= high (None passes: the default applies)."""
    if value is not None and not low <= value <= high:
        raise InputError(f"{option} must be between {low} and {high}{why}, got {value}")


def check_prompt_text(text: str | None, option: str = "the prompt text") -> None:
    """InputError for a text longer than MAX_PROMPT_CHARS characters."""
    if text is not None and len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"{option} has {len(text)} characters; at most {MAX_PROMPT_CHARS} are accepted")


def check_image_size(width: int | None, height: int | None, count: int = 1, *, width_option: str = "--width",
                     height_option: str = "--height", count_option: str = "--num-images",
                     max_count: int | None = MAX_IMAGES) -> None:
    """Side, count and pixel-budget caps (a None side is the backbone's default, which is within them)."""
    check_range(width_option, width, 1, MAX_SIDE, " pixels")
    check_range(height_option, height, 1, MAX_SIDE, " pixels")
    check_range(count_option, count, 1, max_count or count)
    w, h = width or 1024, height or 1024
    if count * w * h > MAX_PIXELS_PER_CALL:
        raise InputError(f"{count_option} {count} at {w}x{h} is {count * w * h / 2**20:.0f} megapixels at once; "
                         f"at most {MAX_PIXELS_PER_CALL // 2**20} are accepted")


def check_seed(seed: int, count: int = 1) -> None:
    """torch seeds are 64-bit; image i takes seed + i."""
    if not -(2**63) <= seed <= 2**64 - count:
        raise InputError(f"--seed must be between {-(2**63)} and {2**64 - count}, got {seed}")


def prompt_text(prompt) -> str:
    """The text of every turn of a MultimodalPrompt: what the encoder reads, so what the length cap counts."""
    return " ".join(str(p.value) for turn in prompt.turns for p in turn.parts if p.modality == "text")


def check_generation(*, width=None, height=None, num_images: int = 1, steps=None, guidance=None, true_cfg=None,
                     seed: int = 0, text: str | None = None, negative_prompt: str | None = None) -> None:
    """Everything `x2i generate` and X2IPipeline.__call__ refuse before any model runs."""
    check_finite({"--guidance": guidance, "--true-cfg": true_cfg})
    check_image_size(width, height, num_images)
    check_range("--steps", steps, 1, MAX_STEPS)
    check_seed(seed, num_images)
    check_prompt_text(text)
    check_prompt_text(negative_prompt, "--negative-prompt")


# -- memory ----------------------------------------------------------------------------------------
def available_bytes(device) -> int | None:
    """Free memory where tensors of `device` live: CUDA's free memory, or MemAvailable of /proc/meminfo on the
    CPU (Linux); None where it cannot be read (then nothing is refused)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # an unusual driver or a device that vanished: no estimate rather than a crash
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _dtype_bytes(backbone) -> int:
    return next(backbone.transformer.parameters()).element_size()


def _image_tokens(backbone, height: int, width: int) -> int:
    m = int(backbone.size_multiple)  # one packed latent token covers m x m pixels
    return max(1, height // m) * max(1, width // m)


def sampling_bytes(backbone, batch: int, height: int, width: int, text_tokens: int) -> int:
    """Working memory of sampling `batch` images (weights excluded), a deliberately rough upper estimate.

    Transformer: one block is live at a time without grad; about 16 tensors of tokens x width (q, k, v, the
    attention output, the 4x MLP twice, norms, residuals), with the prompt width standing in for the inner width
    (4096 vs 3072 for FLUX). VAE decode: about 4 live activations of 128 channels at full resolution (the FLUX VAE
    decoder's last stage), for the whole batch at once. Attention itself is not quadratic here: torch's
    scaled_dot_product_attention uses memory-efficient kernels on CPU and CUDA, masked or not.
    """
    nbytes = _dtype_bytes(backbone)
    tokens = _image_tokens(backbone, height, width) + text_tokens
    transformer = batch * tokens * int(backbone.prompt_embed_dim) * nbytes * 16
    vae = batch * height * width * 128 * nbytes * 4
    return transformer + vae


def training_bytes(backbone, batch: int, resolution: int, text_tokens: int, *, blocks: int, checkpointing: bool) -> int:
    """Working memory of one alignment micro-step (weights excluded), as rough as sampling_bytes.

    Both passes' captured attention outputs are kept for the loss (2 x blocks tensors of tokens x width); with
    gradient checkpointing the backward keeps each block's input and recomputes one block at a time (about
    16 tensors), without it every block keeps about 12 activations.
    """
    per_tensor = batch * (_image_tokens(backbone, resolution, resolution) + text_tokens) \
        * int(backbone.prompt_embed_dim) * _dtype_bytes(backbone)
    kept = blocks + 16 if checkpointing else 12 * blocks
    return per_tensor * (2 * blocks + kept)


def check_memory(needed: int, device, what: str, advice: str) -> None:
    """InputError when the estimate `needed` exceeds the free memory of `device` (X2I_MEMORY_CHECK=off skips)."""
    if os.environ.get(MEMORY_CHECK_ENV, "").strip().lower() in ("off", "0", "no"):
        return
    free = available_bytes(device)
    if free is None or needed <= free:
        return
    raise InputError(f"{what} needs about {needed / _GIB:.1f} GiB of working memory (an estimate), more than the "
                     f"{free / _GIB:.1f} GiB free on {device}; {advice} ({MEMORY_CHECK_ENV}=off skips this check)")

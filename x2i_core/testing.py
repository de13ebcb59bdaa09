"""Contract checks for plugin authors: call them from your own tests on a tiny instance of your plugin.

Each check raises AssertionError with a message that says what the contract expects. They run the
component for real (a few small forward passes), so build a tiny model for them, as x2i's own
tests do (for example `x2i_plugins.encoders.qwen25vl.tiny.write_tiny_qwen25vl`).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .errors import IncompatibleError, InputError
from .interfaces import Conditioning, EncodedPrompt, MultimodalEncoder
from .prompt import MODALITIES, MultimodalPrompt, PromptPart

#: Two prompts of clearly different lengths, so batching them needs padding.
DEFAULT_PROMPTS = (
    "a red circle",
    "a small blue square on top of a big green triangle, at sunset, watercolor on rough paper",
)


def write_test_video(path, num_frames: int = 8, fps: int = 4, size: tuple[int, int] = (64, 48), seed: int = 0) -> str:
    """Write a small MPEG-4 video of random-coloured frames with PyAV; returns the path."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(num_frames):
            frame = np.empty((height, width, 3), np.uint8)
            frame[:] = rng.integers(0, 256, 3, dtype=np.uint8)  # one flat colour per frame: survives compression
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush
    return str(path)


def write_test_wav(path, seconds: float = 1.0, sampling_rate: int = 8000, channels: int = 2, hz: float = 440.0) -> str:
    """Write a 16-bit PCM sine WAV with the standard library; returns the path."""
    import wave

    import numpy as np

    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    samples = (np.sin(2 * np.pi * hz * t) * 0.5 * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sampling_rate)
        out.writeframes(np.repeat(samples[:, None], channels, axis=1).tobytes())
    return str(path)


def _tolerance(dtype: torch.dtype) -> float:
    """How far padding may move a value: round-off of batched kernels, relative to the values' scale."""
    return 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> tuple[bool, float]:
    """Whether a and b agree within the dtype's tolerance (relative to their scale), and the max gap."""
    a, b = a.float(), b.float()
    gap = (a - b).abs().max().item() if a.numel() else 0.0
    scale = max(1.0, b.abs().max().item() if b.numel() else 0.0)
    return gap <= _tolerance(dtype) * scale, gap


def _check_encoded(out, batch: int, encoder: MultimodalEncoder, what: str) -> None:
    assert isinstance(out, EncodedPrompt), f"{what}: encode() must return an EncodedPrompt, got {type(out).__name__}"
    hs, mask = out.hidden_states, out.attention_mask
    assert isinstance(hs, torch.Tensor) and hs.ndim == 4, (
        f"{what}: hidden_states must be a 4-D tensor (B, C, S, H), got {getattr(hs, 'shape', type(hs))}"
    )
    b, c, s, h = hs.shape
    assert (b, c, h) == (batch, encoder.num_layers, encoder.hidden_size), (
        f"{what}: hidden_states {tuple(hs.shape)} do not match (B={batch}, C=num_layers={encoder.num_layers}, "
        f"S, H=hidden_size={encoder.hidden_size})"
    )
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool, (
        f"{what}: attention_mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}"
    )
    assert tuple(mask.shape) == (b, s), f"{what}: attention_mask {tuple(mask.shape)} must be (B, S) = {(b, s)}"
    assert bool(mask.any(dim=1).all()), f"{what}: every prompt needs at least one real token in attention_mask"
    assert not hs.requires_grad, f"{what}: encode() must run without autograd (the encoder is frozen)"
    real = hs.permute(0, 2, 1, 3)[mask]  # (real tokens, C, H)
    assert bool(torch.isfinite(real).all()), f"{what}: hidden states of real tokens contain NaN or inf"


def _real_tokens(out: EncodedPrompt, row: int) -> torch.Tensor:
    """(C, real S, H) of one row."""
    return out.hidden_states[row][:, out.attention_mask[row]]


def check_encoder(encoder: MultimodalEncoder, prompts: Sequence[MultimodalPrompt | str] | None = None) -> None:
    """Check the MultimodalEncoder contract; raises AssertionError naming the first broken rule.

    `prompts`: two (or more) prompts of different lengths that the encoder understands; defaults to
    two English captions. Checks: shapes (B, C, S, H) against num_layers/hidden_size, a (B, S) bool
    mask, no autograd, determinism, padding leaves each prompt's real-token states unchanged,
    an empty prompt encodes (at least one real token: it is the unconditional prompt of classifier-free guidance),
    InputError for a modality the encoder does not declare.
    """
    prompts = [MultimodalPrompt.coerce(p) for p in (prompts or DEFAULT_PROMPTS)]
    assert len(prompts) >= 2, "check_encoder needs at least two prompts (to test padding)"
    assert encoder.num_layers >= 2, f"num_layers is decoder layers + 1 (embedding output), got {encoder.num_layers}"
    assert set(encoder.modalities) <= set(MODALITIES) and "text" in encoder.modalities, (
        f"modalities must include 'text' and be among {MODALITIES}, got {sorted(encoder.modalities)}"
    )

    batch = encoder.encode(prompts)
    _check_encoded(batch, len(prompts), encoder, "a batch of prompts")
    dtype = batch.hidden_states.dtype

    again = encoder.encode(prompts)
    ok, gap = _close(again.hidden_states, batch.hidden_states, dtype)
    assert ok and torch.equal(again.attention_mask, batch.attention_mask), (
        f"encoding the same prompts twice gave different results (max difference {gap:.3g}): "
        f"is the model in eval mode?"
    )

    lengths = batch.attention_mask.sum(dim=1)
    assert int(lengths.min()) < int(lengths.max()), (
        "the prompts encode to the same length, so padding is not tested: give prompts of different lengths"
    )
    for row, prompt in enumerate(prompts):
        alone = encoder.encode([prompt])
        _check_encoded(alone, 1, encoder, f"prompt {row} alone")
        solo, batched = _real_tokens(alone, 0), _real_tokens(batch, row)
        assert solo.shape == batched.shape, (
            f"prompt {row} has {solo.shape[1]} real tokens alone but {batched.shape[1]} in a batch: "
            f"the mask must mark exactly the prompt's own tokens"
        )
        ok, gap = _close(batched, solo, dtype)
        assert ok, (
            f"padding changed prompt {row}'s real-token hidden states (max difference {gap:.3g}, "
            f"tolerance {_tolerance(dtype):g} x scale): pass the attention mask to the model and keep "
            f"position ids independent of padding"
        )

    for empty in (MultimodalPrompt(), MultimodalPrompt.from_text("")):
        out = encoder.encode([empty])
        assert out.hidden_states.shape[0] == 1 and out.hidden_states.shape[1] == encoder.num_layers, (
            "an empty prompt (the unconditional prompt of classifier-free guidance) must encode like any other")
        assert bool(out.attention_mask.any()), "an empty prompt must still give at least one real token (its template)"

    for modality in sorted(set(MODALITIES) - set(encoder.modalities)):
        prompt = MultimodalPrompt((PromptPart(modality, f"missing.{modality}"), PromptPart("text", "a cat")))
        try:
            encoder.encode([prompt])
        except InputError:
            pass
        else:
            raise AssertionError(
                f"a prompt with {modality} input must raise InputError: the encoder declares only "
                f"{sorted(encoder.modalities)} (call self.check_prompt(prompt) in encode)"
            )


class _ShapeOnly:
    """An encoder stand-in with other shapes, for the mismatch check (check_fits reads only these)."""

    def __init__(self, num_layers: int, hidden_size: int):
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.identity = f"mismatched(layers={num_layers}, hidden={hidden_size})"


def check_aligner(aligner, encoder: MultimodalEncoder, prompts: Sequence[MultimodalPrompt | str] | None = None) -> None:
    """Check the Aligner contract against a real encoder; raises AssertionError naming the broken rule.

    Checks: check_fits accepts this encoder and raises IncompatibleError for other shapes; the
    output is a Conditioning with prompt_embeds (B, S, D) and pooled (B, P) matching out_prompt_dim/out_pooled_dim;
    real-token outputs (and a masked pool) do not depend on padding; gradients reach parameters.
    The aligner's .grad fields are reset to None afterwards.
    """
    prompts = [MultimodalPrompt.coerce(p) for p in (prompts or DEFAULT_PROMPTS)]
    assert len(prompts) >= 2, "check_aligner needs at least two prompts (to test padding)"
    assert isinstance(aligner, torch.nn.Module), f"an Aligner must be a torch.nn.Module, got {type(aligner).__name__}"

    try:
        aligner.check_fits(encoder)
    except IncompatibleError as exc:
        raise AssertionError(f"check_fits rejected the encoder it is checked with: {exc}") from exc
    other = _ShapeOnly(encoder.num_layers + 1, encoder.hidden_size)
    try:
        aligner.check_fits(other)
    except IncompatibleError:
        pass
    else:
        raise AssertionError("check_fits must raise IncompatibleError for an encoder with another number of layers")

    was_training = aligner.training
    aligner.eval()
    try:
        encoded = encoder.encode(prompts)
        mask = encoded.attention_mask
        with torch.no_grad():
            cond = aligner(encoded.hidden_states, mask)
        assert isinstance(cond, Conditioning), f"the aligner must return a Conditioning, got {type(cond).__name__}"
        b, s = mask.shape
        pe, pooled = cond.prompt_embeds, cond.pooled_prompt_embeds
        assert pe.ndim == 3 and tuple(pe.shape[:2]) == (b, s), (
            f"prompt_embeds must be (B, S, D) = ({b}, {s}, D), got {tuple(pe.shape)}"
        )
        assert pooled.ndim == 2 and pooled.shape[0] == b, f"pooled_prompt_embeds must be (B, P), got {tuple(pooled.shape)}"
        assert pe.shape[2] == aligner.out_prompt_dim, f"prompt_embeds width {pe.shape[2]} != out_prompt_dim {aligner.out_prompt_dim}"
        assert pooled.shape[1] == aligner.out_pooled_dim, f"pooled width {pooled.shape[1]} != out_pooled_dim {aligner.out_pooled_dim}"
        assert bool(torch.isfinite(pe[mask]).all()) and bool(torch.isfinite(pooled).all()), (
            "the aligner's outputs on real tokens contain NaN or inf"
        )
        if cond.attention_mask is not None:
            assert torch.equal(cond.attention_mask.bool().cpu(), mask.bool().cpu()), (
                "Conditioning.attention_mask must be the encoder's mask"
            )

        dtype = pe.dtype
        masked_pool = aligner.masked_pool
        for row, prompt in enumerate(prompts):
            alone = encoder.encode([prompt])
            with torch.no_grad():
                solo = aligner(alone.hidden_states, alone.attention_mask)
            ok, gap = _close(pe[row][mask[row]], solo.prompt_embeds[0][alone.attention_mask[0]], dtype)
            assert ok, f"padding changed prompt {row}'s prompt_embeds on real tokens (max difference {gap:.3g})"
            if masked_pool:
                ok, gap = _close(pooled[row], solo.pooled_prompt_embeds[0], dtype)
                assert ok, f"padding changed prompt {row}'s pooled embedding (max difference {gap:.3g}): pool over real tokens only"

        aligner.train()
        with torch.enable_grad():
            out = aligner(encoded.hidden_states, mask)
            loss = out.prompt_embeds.float().pow(2).mean() + out.pooled_prompt_embeds.float().pow(2).mean()
            loss.backward()
        trainable = [p for p in aligner.parameters() if p.requires_grad]
        assert trainable, "the aligner has no trainable parameters"
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainable), (
            "no gradient reached the aligner's parameters"
        )
    finally:
        for p in aligner.parameters():
            p.grad = None
        aligner.train(was_training)


def check_backbone(backbone, *, height: int | None = None, width: int | None = None, steps: int = 2,
                   guidance_scale: float = 3.5, length: int = 6) -> None:
    """Check the DiTBackbone contract on a tiny backbone; raises AssertionError naming the broken rule.

    Checks: positive embed widths; a frozen transformer in eval mode; uniquely named attention points
    of kind double/single that are modules of the transformer and, during predict, return
    (image, text) tokens (double) or [text; image] tokens (single); noise_latents seeded; predict keeps
    the latents' shape, is finite, accepts a padding mask and lets gradients reach the conditioning;
    generate returns one PIL image per row at (width, height), reports every step and is reproducible.
    height/width default to twice the backbone's `size_multiple` (16 when it has none).
    """
    multiple = int(backbone.size_multiple)
    height, width = height or 2 * multiple, width or 2 * multiple
    d, p = backbone.prompt_embed_dim, backbone.pooled_embed_dim
    assert isinstance(d, int) and isinstance(p, int) and d > 0 and p > 0, (
        f"prompt/pooled widths must be positive ints, got {d!r}/{p!r}")
    transformer = backbone.transformer
    assert not any(t.requires_grad for t in transformer.parameters()), "the backbone's transformer must be frozen"
    assert not transformer.training, "the backbone's transformer must be in eval mode"

    points = backbone.attention_points()
    assert points, "attention_points() returned nothing: alignment needs hook points"
    names = [point.name for point in points]
    assert len(set(names)) == len(names), f"attention point names must be unique, got {names}"
    modules = set(map(id, transformer.modules()))
    for point in points:
        assert point.kind in ("double", "single"), f"attention point {point.name}: kind must be double or single"
        assert id(point.module) in modules, f"attention point {point.name} is not a module of the transformer"

    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    noise = backbone.noise_latents(2, height, width, seeded())
    assert torch.equal(noise, backbone.noise_latents(2, height, width, seeded())), "noise_latents ignores its generator"
    assert noise.shape[0] == 2, f"noise_latents(2, ...) must have batch 2, got {tuple(noise.shape)}"

    g = torch.Generator().manual_seed(1)
    prompt = torch.randn(2, length, d, generator=g, requires_grad=True)
    pooled = torch.randn(2, p, generator=g)
    seen_outputs: dict[str, object] = {}
    hooks = [point.module.register_forward_hook(lambda m, a, out, n=point.name: seen_outputs.__setitem__(n, out))
             for point in points]
    try:
        with torch.enable_grad():
            out = backbone.predict(noise, torch.tensor(1.0), Conditioning(prompt, pooled), height=height, width=width,
                                   guidance_scale=guidance_scale)
            assert out.shape == noise.shape, f"predict must keep the latents' shape {tuple(noise.shape)}, got {tuple(out.shape)}"
            assert bool(torch.isfinite(out).all()), "predict returned non-finite values"
            out.float().pow(2).mean().backward()
    finally:
        for hook in hooks:
            hook.remove()
    assert prompt.grad is not None and bool(prompt.grad.abs().sum() > 0), "no gradient reached prompt_embeds through predict"
    image_len = noise.shape[1]
    for point in points:
        assert point.name in seen_outputs, f"attention point {point.name} did not run during predict"
        result = seen_outputs[point.name]
        if point.kind == "double":
            assert isinstance(result, tuple) and len(result) >= 2, f"{point.name}: a double point must return (image, text)"
            got = (result[0].shape[1], result[1].shape[1])
            assert got == (image_len, length), f"{point.name}: expected (image, text) = ({image_len}, {length}) tokens, got {got}"
        else:
            assert torch.is_tensor(result) and result.shape[1] == length + image_len, (
                f"{point.name}: a single point must return [text; image] = {length + image_len} tokens")

    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, length // 2:] = False
    with torch.no_grad():
        masked = backbone.predict(noise, torch.tensor(1.0), Conditioning(prompt.detach(), pooled, mask),
                                  height=height, width=width, guidance_scale=guidance_scale)
    assert masked.shape == noise.shape, "predict with a padding mask must keep the latents' shape"

    cond = Conditioning(prompt.detach(), pooled)
    seen = []
    images = backbone.generate(cond, height=height, width=width, num_inference_steps=steps,
                               guidance_scale=guidance_scale, generator=seeded(), on_step=lambda i, n: seen.append((i, n)))
    assert len(images) == 2, f"generate must return one image per conditioning row, got {len(images)}"
    assert all(getattr(im, "size", None) == (width, height) for im in images), "generated images must be (width, height)"
    assert seen and seen[-1] == (steps, steps), f"on_step must report each step as (i, total), got {seen}"
    again = backbone.generate(cond, height=height, width=width, num_inference_steps=steps,
                              guidance_scale=guidance_scale, generator=seeded())
    assert all(a.tobytes() == b.tobytes() for a, b in zip(images, again)), "generate with a seeded generator must be reproducible"

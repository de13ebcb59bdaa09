"""The built-in `flux` backbone on a tiny real diffusers Flux folder written by write_tiny_flux."""
import shutil
from pathlib import Path

import pytest
import torch

from x2i_core.errors import CheckpointError, InputError
from x2i_core.interfaces import Conditioning
from x2i_core.plugins import get_registry, load_component
from x2i_core.testing import check_backbone
from x2i_plugins.backbones.flux.backbone import FluxBackbone
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux

H = W = 32  # tiny VAE: scale factor 2, so multiples of 4


@pytest.fixture(scope="session")
def flux_dir(tmp_path_factory):
    return write_tiny_flux(tmp_path_factory.mktemp("flux") / "tiny-flux", seed=0)


@pytest.fixture(scope="session")
def backbone(flux_dir):
    return FluxBackbone.from_pretrained(flux_dir, device="cpu")


def _cond(batch=2, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(batch, length, PROMPT_DIM, generator=g), torch.randn(batch, POOLED_DIM, generator=g))


def test_presets_registered():
    registry = get_registry()
    assert {"flux", "flux-dev", "flux-schnell", "shuttle-3-diffusion"} <= set(registry.names("backbone"))
    dev = registry.get("backbone", "flux-dev")
    assert dev.pretrained == "black-forest-labs/FLUX.1-dev"
    assert dev.options == {"default_steps": 28, "default_guidance": 3.5, "max_sequence_length": 512}
    assert registry.get("backbone", "flux-schnell").options["default_steps"] == 4
    assert registry.get("backbone", "flux-schnell").options["default_guidance"] == 0.0
    assert registry.get("backbone", "flux").pretrained is None


def test_folder_resolves_to_generic_flux(flux_dir):
    spec, checkpoint = get_registry().resolve("backbone", flux_dir)
    assert spec.name == "flux" and checkpoint == flux_dir
    loaded = load_component("backbone", "flux-schnell", flux_dir, device="cpu")
    assert (loaded.default_steps, loaded.default_guidance, loaded.max_sequence_length) == (4, 0.0, 256)


def test_loads_without_text_encoders_and_frozen(backbone):
    pipe = backbone.pipe
    assert pipe.text_encoder is None and pipe.text_encoder_2 is None and pipe.tokenizer is None
    assert (backbone.prompt_embed_dim, backbone.pooled_embed_dim) == (PROMPT_DIM, POOLED_DIM)
    assert not backbone.transformer.training
    assert backbone.size_multiple == 4


def test_contract(backbone):
    check_backbone(backbone, height=H, width=W)


def test_attention_points_in_forward_order(backbone):
    points = backbone.attention_points()
    assert [(p.name, p.kind) for p in points] == [
        ("transformer_blocks.0.attn", "double"), ("single_transformer_blocks.0.attn", "single")]


def test_predict_matches_pipeline_first_step(backbone):
    """predict(sigma) == the transformer call FluxPipeline makes at its first step (t/1000 = sigma)."""
    cond = _cond(1)
    noise = backbone.noise_latents(1, H, W, torch.Generator().manual_seed(3))
    seen = {}

    def capture(module, args, kwargs, out):
        seen.setdefault("timestep", kwargs["timestep"])
        seen.setdefault("out", out[0])

    hook = backbone.transformer.register_forward_hook(capture, with_kwargs=True)
    try:
        backbone.denoise(cond, height=H, width=W, num_inference_steps=2, guidance_scale=3.5, latents=noise)
    finally:
        hook.remove()
    sigma = seen["timestep"][0]
    assert 0.0 < float(sigma) <= 1.0
    with torch.no_grad():
        mine = backbone.predict(noise, sigma, cond, height=H, width=W, guidance_scale=3.5)
    torch.testing.assert_close(mine, seen["out"])


def test_predict_passes_gradients_to_conditioning(backbone):
    """Alignment trains the AlignNet through predict: grads reach the embeddings, never the frozen weights."""
    cond = _cond(1)
    cond.prompt_embeds.requires_grad_(True)
    cond.pooled_prompt_embeds.requires_grad_(True)
    noise = backbone.noise_latents(1, H, W, torch.Generator().manual_seed(0))
    backbone.predict(noise, torch.tensor(1.0), cond, height=H, width=W, guidance_scale=3.5).square().mean().backward()
    assert cond.prompt_embeds.grad.abs().sum() > 0 and cond.pooled_prompt_embeds.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.transformer.parameters())


def test_attention_mask_hides_padding(backbone):
    """With a mask, what sits in padded positions no longer matters; without one it does."""
    cond = _cond(1, length=6)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    other = cond.prompt_embeds.clone()
    other[:, 4:] = 100.0
    noise = backbone.noise_latents(1, H, W, torch.Generator().manual_seed(1))
    kw = dict(height=H, width=W, guidance_scale=3.5)
    with torch.no_grad():
        a = backbone.predict(noise, torch.tensor(1.0), Conditioning(cond.prompt_embeds, cond.pooled_prompt_embeds, mask), **kw)
        b = backbone.predict(noise, torch.tensor(1.0), Conditioning(other, cond.pooled_prompt_embeds, mask), **kw)
        c = backbone.predict(noise, torch.tensor(1.0), Conditioning(other, cond.pooled_prompt_embeds), **kw)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # generate goes through FluxPipeline's joint_attention_kwargs: same invariance there
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    img_a = backbone.denoise(Conditioning(cond.prompt_embeds, cond.pooled_prompt_embeds, mask), num_inference_steps=2,
                             guidance_scale=3.5, height=H, width=W, generator=gen())
    img_b = backbone.denoise(Conditioning(other, cond.pooled_prompt_embeds, mask), num_inference_steps=2,
                             guidance_scale=3.5, height=H, width=W, generator=gen())
    torch.testing.assert_close(img_a, img_b)


def test_generate_reports_steps_and_is_seeded(backbone):
    steps = []
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a = backbone.generate(_cond(1), height=H, width=W + 8, num_inference_steps=3, guidance_scale=3.5,
                          generator=gen(), on_step=lambda i, n: steps.append((i, n)))
    b = backbone.generate(_cond(1), height=H, width=W + 8, num_inference_steps=3, guidance_scale=3.5, generator=gen())
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert a[0].size == (W + 8, H) and a[0].tobytes() == b[0].tobytes()


def test_bad_size_is_input_error(backbone):
    with pytest.raises(InputError, match="multiples of 4"):
        backbone.generate(_cond(1), height=30, width=32, num_inference_steps=1, guidance_scale=3.5)


def test_teacher_encodes_like_flux_pipeline(backbone, flux_dir):
    from diffusers import FluxPipeline

    teacher = backbone.load_teacher()
    cond = teacher.encode_text(["a red circle", "zwei Hunde im Schnee, 一只猫"])
    assert cond.prompt_embeds.shape == (2, 512, PROMPT_DIM)
    assert cond.pooled_prompt_embeds.shape == (2, POOLED_DIM)
    assert cond.attention_mask is None
    assert teacher.t5_token_mask(["a red circle"]).sum() < 512
    full = FluxPipeline.from_pretrained(flux_dir)
    ref, ref_pooled, _ = full.encode_prompt(["a red circle", "zwei Hunde im Schnee, 一只猫"], max_sequence_length=512)
    # same ids and weights; the reference pipeline may pick another attention kernel, hence the tolerance
    torch.testing.assert_close(cond.prompt_embeds, ref, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(cond.pooled_prompt_embeds, ref_pooled, atol=1e-4, rtol=1e-3)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        FluxBackbone.from_pretrained(str(tmp_path / "nope"), device="cpu")


def test_missing_subfolder(flux_dir, tmp_path):
    broken = tmp_path / "no-vae"
    shutil.copytree(flux_dir, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(CheckpointError, match="missing vae/config.json"):
        FluxBackbone.from_pretrained(str(broken), device="cpu")


def test_transformer_only_folder_says_what_to_do(flux_dir, tmp_path):
    alone = tmp_path / "finetuned-transformer"
    shutil.copytree(Path(flux_dir) / "transformer", alone)
    with pytest.raises(CheckpointError, match="FluxTransformer2DModel on its own.*put it as transformer/"):
        FluxBackbone.from_pretrained(str(alone), device="cpu")


def test_uncached_hub_checkpoint_gets_a_hint(monkeypatch):
    """Offline, diffusers blames a missing config.json; the error must say what to check instead."""
    from x2i_plugins.backbones.flux import backbone as flux_backbone

    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, name, **kw: None)
    assert "not in the local Hugging Face cache" in flux_backbone._hub_hint("some-org/some-flux", "transformer")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, name, **kw: "/cache/config.json")
    assert flux_backbone._hub_hint("some-org/some-flux", "transformer") == ""


def test_corrupt_weights(flux_dir, tmp_path):
    broken = tmp_path / "corrupt"
    shutil.copytree(flux_dir, broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot load the Flux transformer") as err:
        FluxBackbone.from_pretrained(str(broken), device="cpu")
    assert "\n" not in str(err.value)


def test_teacher_missing(tmp_path):
    folder = write_tiny_flux(tmp_path / "no-teacher", with_teacher=False)
    backbone = FluxBackbone.from_pretrained(folder, device="cpu")
    with pytest.raises(CheckpointError, match="no teacher text encoders"):
        backbone.load_teacher()


def test_offload_on_cpu_is_a_note(flux_dir):
    backbone = FluxBackbone.from_pretrained(flux_dir, device="cpu", offload=True)
    assert backbone.notes and "no effect on CPU" in backbone.notes[0]
    assert len(backbone.generate(_cond(1), height=H, width=W, num_inference_steps=1, guidance_scale=3.5)) == 1


def test_true_cfg_follows_the_pipeline_loop_and_guides(backbone):
    gen = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    kw = dict(height=H, width=W, num_inference_steps=3, guidance_scale=3.5)
    plain = backbone.denoise(_cond(2), generator=gen(), **kw)
    # Negative == prompt: guidance is a no-op, so our own Euler loop must land exactly where FluxPipeline's does.
    same = backbone.denoise(_cond(2), generator=gen(), negative=_cond(2), true_cfg_scale=4.0, **kw)
    assert torch.allclose(plain, same, atol=1e-5)
    steps = []
    guided = backbone.denoise(_cond(2), generator=gen(), negative=_cond(1, length=3, seed=9), true_cfg_scale=4.0,
                              on_step=lambda i, n: steps.append(i), **kw)
    assert steps == [1, 2, 3] and (guided - plain).abs().max() > 1e-3
    off = backbone.denoise(_cond(2), generator=gen(), negative=_cond(2, seed=9), true_cfg_scale=1.0, **kw)
    assert torch.equal(off, plain)  # scale 1 = no guidance, the plain pipeline

"""Today's generation paths (no adapter) keep their images: compared with files written before the engine refactor
(tests/data/engine_regression/make.py), and with diffusers' own FluxPipeline run on the same inputs here."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from PIL import Image

DATA = Path(__file__).resolve().parent / "data" / "engine_regression"
_spec = importlib.util.spec_from_file_location("engine_regression_make", DATA / "make.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)

# Bit-identity is a promise within one torch build and CPU kernel set (the machine that wrote the files); elsewhere
# float kernels may round differently, so the files are compared at float32 round-off there.
SAME_MACHINE = json.loads((DATA / "machine.json").read_text()) == make.machine()


def _same(actual: np.ndarray, expected: np.ndarray, pixels: bool = False) -> None:
    if SAME_MACHINE:
        np.testing.assert_array_equal(actual, expected)
    elif pixels:
        assert np.abs(actual.astype(int) - expected.astype(int)).max() <= 1
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return make.tiny_flux_backbone(tmp_path_factory.mktemp("engine-regression"))


@pytest.mark.parametrize("name", sorted(make.flux_cases()))
def test_flux_paths_match_pinned_latents_and_images(backbone, name):
    cond, kwargs = make.flux_cases()[name]
    latents = backbone.denoise(cond, **kwargs)
    _same(latents.numpy(), np.load(DATA / f"{name}.npy"))
    image = backbone.decode(latents, kwargs["height"], kwargs["width"])[0]
    with Image.open(DATA / f"{name}.png") as pinned:
        _same(np.asarray(image), np.asarray(pinned), pixels=True)


def test_plain_and_true_cfg_equal_diffusers_flux_pipeline_bit_for_bit(backbone):
    """Machine-independent anchor: the same inputs through diffusers' FluxPipeline give the very same latents."""
    pipe = FluxPipeline(scheduler=backbone.pipe.scheduler, vae=backbone.vae, transformer=backbone.transformer,
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    cond, kwargs = make.flux_cases()["plain"]
    ref = pipe(prompt_embeds=cond.prompt_embeds, pooled_prompt_embeds=cond.pooled_prompt_embeds, height=make.H,
               width=make.W, num_inference_steps=3, guidance_scale=3.5, generator=make.generators(5),
               output_type="latent", return_dict=False)[0]
    assert torch.equal(backbone.denoise(cond, **kwargs), ref)
    neg = make.conditioning(1, 6, 9)  # same length as the prompt and no padding: diffusers' true-CFG path applies
    ref = pipe(prompt_embeds=cond.prompt_embeds, pooled_prompt_embeds=cond.pooled_prompt_embeds,
               negative_prompt_embeds=neg.prompt_embeds, negative_pooled_prompt_embeds=neg.pooled_prompt_embeds,
               true_cfg_scale=3.0, height=make.H, width=make.W, num_inference_steps=3, guidance_scale=3.5,
               generator=make.generators(5), output_type="latent", return_dict=False)[0]
    mine = backbone.denoise(cond, **{**kwargs, "generator": make.generators(5)}, negative=neg, true_cfg_scale=3.0)
    assert torch.equal(mine, ref)


def test_shapes_world_default_image_is_unchanged():
    """`x2i generate "a red circle"` with every default (the shapes world, true CFG 3, 20 steps, 64x64)."""
    image = make.shapes_default_image()
    with Image.open(DATA / "shapes_default.png") as pinned:
        _same(np.asarray(image), np.asarray(pinned), pixels=True)

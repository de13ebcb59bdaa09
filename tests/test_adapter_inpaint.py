"""img2img, inpaint and outpaint in the Flux engine: the same latents as diffusers' FluxImg2ImgPipeline and
FluxInpaintPipeline on the same inputs, the kept area kept, and the CLI's checks before any model loads."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import FluxImg2ImgPipeline, FluxInpaintPipeline
from PIL import Image

from x2i_cli.main import cli
from x2i_core.errors import InputError
from x2i_core.generate import read_metadata
from x2i_core.interfaces import Conditioning
from x2i_core.request import GenerationRequest, parse_outpaint
from x2i_plugins.backbones.flux.backbone import FluxBackbone
from x2i_plugins.backbones.flux.sampling import pack
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux

H = W = 32


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return FluxBackbone.from_pretrained(write_tiny_flux(tmp_path_factory.mktemp("flux") / "f", with_teacher=False),
                                        device="cpu")


def _cond(seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(batch, 5, PROMPT_DIM, generator=g), torch.randn(batch, POOLED_DIM, generator=g))


def _image(seed, size=(40, 36)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _mask(size=(40, 36)):
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[8:28, 4:20] = 255
    return Image.fromarray(mask)


def _gens(n=1, seed=3):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def _parts(backbone):
    return dict(scheduler=backbone.pipe.scheduler, vae=backbone.vae, transformer=backbone.transformer,
                text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)


def _run(backbone, request, steps=4, n=1, **kw):
    return backbone.denoise(_cond(batch=n), height=H, width=W, num_inference_steps=steps, guidance_scale=3.5,
                            generator=_gens(n), request=request, **kw)


@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_img2img_equals_diffusers_img2img(backbone, strength):
    image = _image(0)
    pipe = FluxImg2ImgPipeline(**_parts(backbone))
    pipe.set_progress_bar_config(disable=True)
    c = _cond()
    ref = pipe(prompt_embeds=c.prompt_embeds, pooled_prompt_embeds=c.pooled_prompt_embeds, image=image,
               strength=strength, height=H, width=W, num_inference_steps=4, guidance_scale=3.5, generator=_gens(),
               output_type="latent", return_dict=False)[0]
    mine = _run(backbone, GenerationRequest(init_image=image, strength=strength))
    assert torch.equal(mine, ref)
    plain = backbone.denoise(c, height=H, width=W, num_inference_steps=4, guidance_scale=3.5, generator=_gens())
    assert (mine - plain).abs().max() > 1e-3


@pytest.mark.parametrize("strength", [0.7, 1.0])
def test_inpaint_equals_diffusers_inpaint(backbone, strength):
    image, mask = _image(1), _mask()
    pipe = FluxInpaintPipeline(**_parts(backbone))
    pipe.set_progress_bar_config(disable=True)
    c = _cond()
    ref = pipe(prompt_embeds=c.prompt_embeds, pooled_prompt_embeds=c.pooled_prompt_embeds, image=image,
               mask_image=mask, strength=strength, height=H, width=W, num_inference_steps=4, guidance_scale=3.5,
               generator=_gens(), output_type="latent", return_dict=False)[0]
    assert torch.equal(_run(backbone, GenerationRequest(init_image=image, mask=mask, strength=strength)), ref)


def _init_latents(backbone, image, height, width, seed):
    pixels = backbone.pipe.image_processor.preprocess(image, height=height, width=width)
    vae = backbone.vae
    latents = vae.encode(pixels).latent_dist.sample(generator=torch.Generator().manual_seed(seed))
    return pack((latents - vae.config.shift_factor) * vae.config.scaling_factor)


@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "true-cfg"])
def test_inpaint_keeps_the_unmasked_latents_for_every_image(backbone, cfg):
    image, mask = _image(2, (W, H)), _mask((W, H))
    extra = dict(negative=_cond(9), true_cfg_scale=3.0) if cfg else {}
    out = _run(backbone, GenerationRequest(init_image=image, mask=mask), n=2, **extra)
    keep = pack(torch.from_numpy(np.asarray(mask) < 128)[None, None].float().repeat(1, 4, 1, 1)
                .reshape(1, 4, H, W)[:, :, ::2, ::2].contiguous()) > 0.5
    for i in range(2):  # image i keeps the init latents its own generator sampled from the VAE
        init = _init_latents(backbone, image, H, W, 3 + i)
        assert torch.equal(out[i][keep[0]], init[0][keep[0]])
        assert (out[i][~keep[0]] - init[0][~keep[0]]).abs().max() > 1e-3


def test_outpaint_grows_the_canvas_and_keeps_the_original(backbone):
    image = _image(3, (24, 32))
    request = GenerationRequest(init_image=image, outpaint=(4, 0, 4, 0))
    assert request.canvas_size() == (32, 32) and request.effective_strength() == 1.0
    out = _run(backbone, request)
    canvas = np.pad(np.asarray(image), ((0, 0), (4, 4), (0, 0)), mode="edge")
    init = _init_latents(backbone, Image.fromarray(canvas), H, W, 3)
    cols = W // 4  # packed tokens per row: 4 pixels each with the tiny VAE
    inner = torch.zeros(H // 4, cols, dtype=torch.bool)
    inner[:, 1:cols - 1] = True
    inner = inner.reshape(-1)
    assert torch.equal(out[0][inner], init[0][inner])
    assert (out[0][~inner] - init[0][~inner]).abs().max() > 1e-3


def test_small_strength_runs_the_last_step_only(backbone):
    steps = []
    _run(backbone, GenerationRequest(init_image=_image(0), strength=0.1), steps=4, on_step=lambda i, n: steps.append((i, n)))
    assert steps == [(1, 1)]


def test_request_checks(tmp_path):
    _image(0).save(tmp_path / "init.png")
    _mask((20, 20)).save(tmp_path / "small-mask.png")
    for kwargs, message in [
        (dict(init_image=tmp_path / "init.png", strength=0.0), r"\(0, 1\]"),
        (dict(init_image=tmp_path / "init.png", strength=1.5), r"\(0, 1\]"),
        (dict(init_image=tmp_path / "nope.png"), "--init-image file not found"),
        (dict(init_image=tmp_path / "init.png", mask=tmp_path / "nope.png"), "--mask file not found"),
        (dict(init_image=tmp_path / "init.png", mask=tmp_path / "small-mask.png"), "20x20 but the init image is 40x36"),
        (dict(mask=tmp_path / "small-mask.png"), "need.*--init-image"),
    ]:
        with pytest.raises(InputError, match=message):
            GenerationRequest(**kwargs).check()
    assert parse_outpaint("0, 8,16,0") == (0, 8, 16, 0)
    for bad in ("1,2,3", "0,0,0,0", "-1,0,0,0", "a,b,c,d"):
        with pytest.raises(InputError, match="LEFT,TOP,RIGHT,BOTTOM"):
            parse_outpaint(bad)


# -- the CLI, on the built-in shapes world ----------------------------------------------------------
def _generate(args):
    return CliRunner().invoke(cli, ["generate", *args])


def test_cli_bad_inputs_fail_before_models_load(tmp_path, monkeypatch):
    import x2i_core.generate as generate_module

    def no_loading(*a, **k):
        raise AssertionError("models were loaded")

    monkeypatch.setattr(generate_module.X2IPipeline, "from_names", no_loading)
    _image(0).save(tmp_path / "init.png")
    _mask((20, 20)).save(tmp_path / "small.png")
    init = ["--init-image", str(tmp_path / "init.png")]
    for args in (
        [*init, "--strength", "0"], [*init, "--strength", "1.01"], [*init, "--mask", str(tmp_path / "missing.png")],
        [*init, "--mask", str(tmp_path / "small.png")], ["--init-image", str(tmp_path / "missing.png")],
        ["--strength", "0.5"], [*init, "--outpaint", "1,2"], ["--lora", str(tmp_path / "missing.safetensors")],
        ["--lora-fuse"],
    ):
        result = _generate(["a red circle", "-o", str(tmp_path / "x.png"), *args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.stderr)


def test_cli_img2img_inpaint_outpaint_on_the_default_world(tmp_path):
    """One file may be both the MLLM's --image and the DiT's --init-image; metadata records the DiT inputs."""
    _image(5, (64, 64)).save(tmp_path / "scene.png")
    _mask((64, 64)).save(tmp_path / "mask.png")
    scene = str(tmp_path / "scene.png")
    runs = {
        "img2img": ["--init-image", scene, "--strength", "0.5", "--image", scene],
        "inpaint": ["--init-image", scene, "--mask", str(tmp_path / "mask.png")],
        "outpaint": ["--init-image", scene, "--outpaint", "16,0,16,0"],
    }
    for name, args in runs.items():
        out = tmp_path / f"{name}.png"
        result = _generate(["a red circle", "--steps", "4", "-o", str(out), *args])
        assert result.exit_code == 0, result.output
        meta = read_metadata(out)
        assert meta["init_image"] == "scene.png"
        with Image.open(out) as made:
            assert made.size == ((96, 64) if name == "outpaint" else (64, 64))
    assert read_metadata(tmp_path / "img2img.png")["strength"] == "0.5"
    assert read_metadata(tmp_path / "inpaint.png")["mask"] == "mask.png"
    assert read_metadata(tmp_path / "outpaint.png")["outpaint"] == "16,0,16,0"

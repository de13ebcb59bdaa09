"""LightControl: the branch (sizes, zero start, save/load), the `lightcontrol` adapter on a tiny Flux backbone (alone,
with true CFG, refusals in one line) and `x2i train-lightcontrol` (loss falls, kill and resume, bad data)."""
import json

import pytest
import torch
from PIL import Image

from x2i_core import GenerationRequest, LightControlNet, MultimodalPrompt
from x2i_core.errors import IncompatibleError, InputError
from x2i_core.interfaces import Conditioning
from x2i_core.plugins import get_registry, load_component
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux

H = W = 16


def _randomize(net: LightControlNet, seed: int) -> LightControlNet:
    """A new branch is a no-op (zero output convs); a trained one is not."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lightcontrol")
    flux = write_tiny_flux(root / "flux", seed=0, with_teacher=False)
    backbone = load_component("backbone", "flux", flux, device="cpu")
    latent = int(backbone.vae.config.latent_channels)
    _randomize(LightControlNet.for_transformer(backbone.transformer.config, latent, (8, 16)), 1).save_pretrained(root / "lc")
    LightControlNet.for_transformer(backbone.transformer.config, latent, (8, 16)).save_pretrained(root / "zero")
    LightControlNet(latent_channels=latent, inner_dim=48, num_double_blocks=1, hidden_channels=(8, 16)).save_pretrained(
        root / "other")
    images = {}
    for name, colour in (("red", (220, 40, 40)), ("blue", (40, 80, 230))):
        images[name] = str(root / f"{name}.png")
        Image.new("RGB", (16, 16), colour).save(images[name])
    return dict(flux=flux, lc=str(root / "lc"), zero=str(root / "zero"), other=str(root / "other"), **images)


@pytest.fixture(scope="module")
def backbone(files):
    return load_component("backbone", "flux", files["flux"], device="cpu")


def _cond(seed):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(1, 5, PROMPT_DIM, generator=g), torch.randn(1, POOLED_DIM, generator=g))


def _sample(backbone, adapters=(), cfg=False, request=None):
    request = request or GenerationRequest()
    for adapter in adapters:
        adapter.check_request(request)
    guides = [adapter.guide(request) for adapter in adapters]
    extra = dict(negative=_cond(9), true_cfg_scale=2.0) if cfg else {}
    return backbone.denoise(_cond(0), height=H, width=W, num_inference_steps=2, guidance_scale=3.5,
                            generator=[torch.Generator().manual_seed(0)], request=request, guides=guides, **extra)


def _adapter(backbone, path, **options):
    adapter = load_component("adapter", "lightcontrol", path, **options)
    adapter.apply(backbone)
    return adapter


def test_branch_is_sized_from_the_transformer_and_starts_as_a_no_op(backbone, files):
    config = backbone.transformer.config
    latent = int(backbone.vae.config.latent_channels)
    net = LightControlNet.for_transformer(config, latent, (8, 16))
    assert len(net.blocks) == config.num_layers
    out = net(torch.randn(2, latent, 4, 6))  # latents of a 2x3 token grid
    inner = config.num_attention_heads * config.attention_head_dim
    assert [tuple(o.shape) for o in out] == [(2, 6, inner)] * config.num_layers
    assert all(torch.count_nonzero(o) == 0 for o in out)
    loaded = LightControlNet.from_pretrained(files["lc"])
    again = LightControlNet.from_pretrained(files["lc"])
    x = torch.randn(1, latent, 4, 4)
    assert torch.equal(loaded(x)[0], again(x)[0]) and torch.count_nonzero(loaded(x)[0]) > 0
    # FLUX.1 sizes: 19 modules of 128 -> 128 -> 256 -> 3072 (counted from the config, nothing allocated)
    with torch.device("meta"):
        big = LightControlNet()
    assert len(big.blocks) == 19 and 5e6 < sum(p.numel() for p in big.blocks[0].parameters()) < 1e7


def test_registered():
    assert "lightcontrol" in get_registry().names("adapter")


@pytest.mark.parametrize("cfg", [False, True])
def test_changes_the_image_alone_and_with_true_cfg(backbone, files, cfg):
    none = _sample(backbone, cfg=cfg)
    controlled = _sample(backbone, [_adapter(backbone, files["lc"], image=files["red"])], cfg=cfg)
    assert torch.isfinite(controlled).all() and not torch.equal(none, controlled)
    other = _sample(backbone, [_adapter(backbone, files["lc"], image=files["blue"])], cfg=cfg)
    assert not torch.equal(controlled, other)
    zero = _sample(backbone, [_adapter(backbone, files["zero"], image=files["red"])], cfg=cfg)
    assert torch.equal(none, zero)  # an untrained branch changes nothing
    scale0 = _sample(backbone, [_adapter(backbone, files["lc"], image=files["red"], scale=0.0)], cfg=cfg)
    assert torch.equal(none, scale0)


def test_source_defaults_to_the_prompts_first_image(backbone, files):
    adapter = _adapter(backbone, files["lc"])
    prompt = MultimodalPrompt.build("make it blue", images=[files["red"]])
    from_prompt = _sample(backbone, [adapter], request=GenerationRequest(prompt=prompt))
    explicit = _sample(backbone, [_adapter(backbone, files["lc"], image=files["red"])])
    assert torch.equal(from_prompt, explicit)
    with pytest.raises(InputError, match="needs the source image"):
        adapter.check_request(GenerationRequest(prompt="make it blue"))


def test_refusals_are_one_line(backbone, files, tmp_path):
    with pytest.raises(IncompatibleError, match="made for another architecture: inner_dim 48 vs"):
        _adapter(backbone, files["other"], image=files["red"])
    with pytest.raises(InputError, match="--lightcontrol-image file not found"):
        load_component("adapter", "lightcontrol", files["lc"], image=str(tmp_path / "missing.png"))
    (tmp_path / "cn").mkdir()
    (tmp_path / "cn" / "config.json").write_text(json.dumps({"_class_name": "FluxControlNetModel"}))
    with pytest.raises(Exception, match="not a LightControl branch"):
        load_component("adapter", "lightcontrol", str(tmp_path / "cn"))

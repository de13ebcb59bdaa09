"""The `controlnet` adapter on a tiny Flux backbone: tiny FluxControlNetModels written here (from the transformer,
and a Union one), alone, several at once, with true CFG; refusals in one line."""
import json

import pytest
import torch
from diffusers import FluxControlNetModel
from PIL import Image

from x2i_core import GenerationRequest
from x2i_core.errors import IncompatibleError, InputError
from x2i_core.interfaces import Conditioning
from x2i_core.plugins import get_registry, load_component
from x2i_plugins.adapters.controlnet.adapter import ControlNetAdapter, spread
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux

H = W = 16


def _randomize(net: FluxControlNetModel, seed: int) -> FluxControlNetModel:
    """ControlNets start with zero output layers (no effect); trained ones do not."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (net.controlnet_blocks, net.controlnet_single_blocks, net.controlnet_x_embedder):
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("controlnet")
    flux = write_tiny_flux(root / "flux", seed=0, with_teacher=False)
    backbone = load_component("backbone", "flux", flux, device="cpu")
    torch.manual_seed(1)
    plain = FluxControlNetModel.from_transformer(backbone.transformer, num_layers=1, num_single_layers=1,
                                                 attention_head_dim=16, num_attention_heads=2)
    _randomize(plain, 1).save_pretrained(root / "cn")
    torch.manual_seed(2)
    union = FluxControlNetModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                num_attention_heads=2, joint_attention_dim=PROMPT_DIM, pooled_projection_dim=POOLED_DIM,
                                guidance_embeds=True, axes_dims_rope=(4, 6, 6), num_mode=3)
    _randomize(union, 2).save_pretrained(root / "union")
    torch.manual_seed(3)
    other = FluxControlNetModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                num_attention_heads=2, joint_attention_dim=48, pooled_projection_dim=POOLED_DIM,
                                guidance_embeds=True, axes_dims_rope=(4, 6, 6))
    other.save_pretrained(root / "other")
    (root / "sd").mkdir()
    (root / "sd" / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel", "in_channels": 4}))
    images = {}
    for name, colour in (("edges", (250, 250, 250)), ("dark", (5, 5, 5))):
        images[name] = str(root / f"{name}.png")
        Image.new("RGB", (24, 24), colour).save(images[name])
    return dict(flux=flux, cn=str(root / "cn"), union=str(root / "union"), other=str(root / "other"),
                sd=str(root / "sd"), **images)


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
    adapter = load_component("adapter", "controlnet", path, **options)
    adapter.apply(backbone)
    return adapter


def test_registered():
    assert "controlnet" in get_registry().names("adapter")


@pytest.mark.parametrize("cfg", [False, True])
def test_changes_the_image_alone_and_with_true_cfg(backbone, files, cfg):
    adapter = _adapter(backbone, files["cn"], image=files["edges"])
    none, controlled = _sample(backbone, cfg=cfg), _sample(backbone, [adapter], cfg=cfg)
    assert torch.isfinite(controlled).all() and not torch.equal(none, controlled)
    other_image = _adapter(backbone, files["cn"], image=files["dark"])
    assert not torch.equal(controlled, _sample(backbone, [other_image], cfg=cfg))


def test_several_at_once_sum_their_residuals(backbone, files):
    whole = _adapter(backbone, files["cn"], image=files["edges"], scale=1.0)
    halves = [_adapter(backbone, files["cn"], image=files["edges"], scale=0.5) for _ in range(2)]
    assert torch.allclose(_sample(backbone, [whole]), _sample(backbone, halves), atol=1e-5)
    union = _adapter(backbone, files["union"], image=files["dark"], mode=1)
    both = _sample(backbone, [whole, union])
    assert not torch.equal(both, _sample(backbone, [whole])) and not torch.equal(both, _sample(backbone, [union]))


def test_union_modes_and_request_images(backbone, files):
    modes = [_sample(backbone, [_adapter(backbone, files["union"], image=files["edges"], mode=m)]) for m in (0, 2)]
    assert not torch.equal(*modes)
    # the API form: one Union ControlNet, several control images with their modes (FluxMultiControlNetModel)
    shared = _adapter(backbone, files["union"])
    request = GenerationRequest(control_images=[files["edges"], files["dark"]], control_modes=[0, 2],
                                control_scales=[1.0, 0.5])
    assert torch.isfinite(_sample(backbone, [shared], request=request)).all()
    with pytest.raises(InputError, match="Union ControlNet: give --control-mode"):
        _adapter(backbone, files["union"], image=files["edges"]).check_request(GenerationRequest())
    with pytest.raises(InputError, match="not a Union ControlNet"):
        load_component("adapter", "controlnet", files["cn"], image=files["edges"], mode=1)
    with pytest.raises(InputError, match="0..2"):
        load_component("adapter", "controlnet", files["union"], image=files["edges"], mode=5)


def test_refusals_are_one_line(backbone, files, tmp_path):
    with pytest.raises(IncompatibleError, match="made for another architecture: joint_attention_dim 48 vs 32"):
        _adapter(backbone, files["other"], image=files["edges"])
    with pytest.raises(IncompatibleError, match="ControlNetModel, made for another architecture"):
        load_component("adapter", "controlnet", files["sd"], image=files["edges"])
    with pytest.raises(InputError, match="--control-image file not found"):
        load_component("adapter", "controlnet", files["cn"], image=str(tmp_path / "missing.png"))
    with pytest.raises(InputError, match="needs a control image"):
        _adapter(backbone, files["cn"]).check_request(GenerationRequest())


def test_spread_gives_each_block_the_residual_the_transformer_would():
    r = ["a", "b"]
    assert spread(r, 4) == ["a", "a", "b", "b"] and spread(r, 3) == ["a", "a", "b"]
    assert spread(r, 5, repeat=True) == ["a", "b", "a", "b", "a"] and spread(None, 3) is None
    assert isinstance(ControlNetAdapter.describe(ControlNetAdapter("x", {}, scale=0.5)), str)


def test_cli_takes_controlnets_and_refuses_before_loading(files, tmp_path_factory):
    from click.testing import CliRunner

    from _adapter_world import generate_args, write_encoder_and_aligner
    from x2i_cli.main import cli
    from x2i_core.generate import read_metadata

    root = tmp_path_factory.mktemp("cn-cli")
    qwen, align = write_encoder_and_aligner(root)
    out = root / "out.png"
    args = generate_args(qwen, files["flux"], align, out)
    ok = CliRunner().invoke(cli, [*args, "--controlnet", files["cn"], "--control-image", files["edges"],
                                  "--controlnet", files["union"], "--control-image", files["dark"],
                                  "--control-mode", "none", "--control-mode", "2", "--control-scale", "0.7",
                                  "--control-to-encoder"])
    assert ok.exit_code == 0, ok.output
    meta = read_metadata(out)
    assert meta["adapters"].count("controlnet:") == 2 and "#mode2@0.7" in meta["adapters"]
    assert "edges.png" in meta["prompt"]  # --control-to-encoder: the MLLM read the control image
    for extra, line in ((["--controlnet", files["cn"], "--control-image", str(root / "nope.png")], "not found"),
                        (["--controlnet", files["cn"]], "needs its --control-image"),
                        (["--controlnet", files["sd"], "--control-image", files["edges"]], "another architecture"),
                        (["--controlnet", files["other"], "--control-image", files["edges"]], "joint_attention_dim 48")):
        bad = CliRunner().invoke(cli, [*args, *extra])
        assert bad.exit_code == 2 and line in bad.output and "Traceback" not in bad.output, bad.output


def test_works_on_memory_levels(files):
    backbone = load_component("backbone", "flux", files["flux"], device="cpu", memory="lowest")
    adapter = _adapter(backbone, files["cn"], image=files["edges"])
    assert adapter.model.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
    from diffusers.hooks import HookRegistry

    hooks = HookRegistry.check_if_exists_or_initialize(adapter.model.transformer_blocks[0]).hooks
    assert any("group_offloading" in name for name in hooks)
    assert not torch.equal(_sample(backbone, [adapter], cfg=True), _sample(backbone, cfg=True))


def test_with_kontext_the_source_tokens_get_no_residual(files):
    kontext = load_component("backbone", "flux-kontext", files["flux"], device="cpu")
    adapter = _adapter(kontext, files["cn"], image=files["edges"])
    request = GenerationRequest(init_image=files["dark"])
    edited, controlled = _sample(kontext, request=request), _sample(kontext, [adapter], request=request)
    assert controlled.shape == edited.shape and not torch.equal(edited, controlled)


def test_a_dev_controlnet_on_a_backbone_without_guidance(files, tmp_path):
    """schnell has no guidance embedder; a ControlNet trained on dev has one and gets the request's guidance."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from x2i_plugins.backbones.flux.tiny import flux_scheduler, tiny_vae

    torch.manual_seed(4)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=PROMPT_DIM, pooled_projection_dim=POOLED_DIM, guidance_embeds=False, axes_dims_rope=(4, 6, 6))
    FluxPipeline(scheduler=flux_scheduler(), vae=tiny_vae(), transformer=transformer, text_encoder=None, tokenizer=None,
                 text_encoder_2=None, tokenizer_2=None).save_pretrained(str(tmp_path / "schnell"))
    backbone = load_component("backbone", "flux-schnell", str(tmp_path / "schnell"), device="cpu")
    adapter = _adapter(backbone, files["cn"], image=files["edges"])
    assert adapter.model.config.guidance_embeds and not backbone.transformer.config.guidance_embeds
    assert not torch.equal(_sample(backbone, [adapter]), _sample(backbone))

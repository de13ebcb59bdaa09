"""The FLUX presets beyond dev/schnell (shuttle, flex, fill, kontext, turbo) and a transformer given as one
.safetensors file, each loaded from a tiny folder written here."""
import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import save_file

from x2i_core import GenerationRequest
from x2i_core.errors import CheckpointError, IncompatibleError, InputError
from x2i_core.interfaces import Conditioning
from x2i_core.plugins import get_registry, load_component
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, flux_scheduler, tiny_transformer, tiny_vae, write_tiny_flux
from x2i_plugins.backbones.flux.variants import FluxFillBackbone, FluxKontextBackbone

H = W = 16  # tiny VAE: multiples of 4


def _write(path, transformer) -> str:
    torch.manual_seed(1)
    pipe = FluxPipeline(scheduler=flux_scheduler(), vae=tiny_vae(), transformer=transformer,
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    pipe.save_pretrained(str(path))
    return str(path)


def _fill_transformer() -> FluxTransformer2DModel:
    """The Fill layout, tiny: latents (4 ch x 4) + masked image latents (4 x 4) + mask folded (2x2 px x 4) in, latents out."""
    torch.manual_seed(2)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=48, out_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=PROMPT_DIM, pooled_projection_dim=POOLED_DIM, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    return {
        "base": write_tiny_flux(root / "base", seed=0, with_teacher=False),
        "flex": _write(root / "flex", tiny_transformer(num_layers=2, num_single_layers=1)),  # Flex: fewer double blocks than dev
        "fill": _write(root / "fill", _fill_transformer()),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    paths = {}
    for name, colour in (("red", (200, 30, 30)), ("blue", (20, 40, 220))):
        paths[name] = str(root / f"{name}.png")
        Image.new("RGB", (W, H), colour).save(paths[name])
    mask = Image.new("L", (W, H), 0)
    mask.paste(255, (0, 0, W // 2, H))  # repaint the left half
    paths["mask"] = str(root / "mask.png")
    mask.save(paths["mask"])
    paths["big"] = str(root / "big.png")
    Image.new("RGB", (64, 48), (10, 200, 10)).save(paths["big"])
    return paths


def _cond(seed=0):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(1, 5, PROMPT_DIM, generator=g), torch.randn(1, POOLED_DIM, generator=g))


def _latents(backbone, request=None, height=H, width=W, **kw):
    return backbone.denoise(_cond(), height=height, width=width, num_inference_steps=2, guidance_scale=3.5,
                            generator=[torch.Generator().manual_seed(0)], request=request, **kw)


def test_presets_registered_with_their_defaults():
    registry = get_registry()
    names = set(registry.names("backbone"))
    assert {"shuttle-3.1-aesthetic", "shuttle", "flux-turbo", "flex", "flux-fill", "flux-kontext"} <= names
    assert registry.get("backbone", "shuttle").pretrained == registry.get("backbone", "shuttle-3-diffusion").pretrained
    assert registry.get("backbone", "shuttle-3.1-aesthetic").pretrained == "shuttleai/shuttle-3.1-aesthetic"
    turbo = registry.get("backbone", "flux-turbo")
    assert turbo.pretrained == "black-forest-labs/FLUX.1-dev"
    assert turbo.options["lora"] == "alimama-creative/FLUX.1-Turbo-Alpha" and turbo.options["default_steps"] == 8
    flex = registry.get("backbone", "flex")
    assert flex.options["own_alignment"] and "aligned on it" in flex.summary
    assert registry.get("backbone", "flux-fill").factory.endswith(":FluxFillBackbone")
    assert registry.get("backbone", "flux-kontext").factory.endswith(":FluxKontextBackbone")


def test_shuttle_presets_load_from_a_folder(folders):
    for name in ("shuttle", "shuttle-3.1-aesthetic"):
        backbone = load_component("backbone", name, folders["base"], device="cpu")
        assert (backbone.default_steps, backbone.default_guidance, backbone.max_sequence_length) == (4, 3.5, 256)


def test_flex_loads_and_says_it_needs_its_own_alignnet(folders):
    backbone = load_component("backbone", "flex", folders["flex"], device="cpu")
    assert backbone.own_alignment and len(backbone.transformer.transformer_blocks) == 2
    assert len(backbone.attention_points()) == 3  # 2 double + 1 single: an AlignNet aligned on dev hooks other points
    assert torch.isfinite(_latents(backbone)).all()


def test_single_file_transformer_on_a_base_folder(folders, tmp_path):
    torch.manual_seed(7)
    finetune = tiny_transformer()
    file = tmp_path / "my_finetune.safetensors"
    save_file(finetune.state_dict(), str(file))
    backbone = load_component("backbone", "flux", folders["base"], device="cpu", transformer_file=str(file))
    loaded = backbone.transformer.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in finetune.state_dict().items())
    base = load_component("backbone", "flux", folders["base"], device="cpu")
    assert not torch.equal(_latents(backbone), _latents(base))


def test_single_file_refusals(folders, tmp_path):
    with pytest.raises(InputError, match="must be a .safetensors file"):
        load_component("backbone", "flux", folders["base"], device="cpu", transformer_file=str(tmp_path / "x.ckpt"))
    with pytest.raises(InputError, match="not found"):
        load_component("backbone", "flux", folders["base"], device="cpu", transformer_file=str(tmp_path / "x.safetensors"))
    other = tiny_transformer(num_layers=1, num_single_layers=2).state_dict()  # another architecture
    save_file({k: v for k, v in other.items() if "single_transformer_blocks.1" in k}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_component("backbone", "flux", folders["base"], device="cpu", transformer_file=str(tmp_path / "bad.safetensors"))


def test_fill_uses_the_masked_image(folders, images):
    backbone = load_component("backbone", "flux-fill", folders["fill"], device="cpu")
    assert isinstance(backbone, FluxFillBackbone) and (backbone.default_steps, backbone.default_guidance) == (50, 30.0)
    red = _latents(backbone, GenerationRequest(init_image=images["red"], mask=images["mask"]))
    blue = _latents(backbone, GenerationRequest(init_image=images["blue"], mask=images["mask"]))
    assert red.shape == (1, (H // 4) * (W // 4), 16) and torch.isfinite(red).all()
    assert not torch.equal(red, blue)  # the Fill channels carry the init image
    outpaint = _latents(backbone, GenerationRequest(init_image=images["red"], outpaint=(4, 0, 0, 0)))
    assert torch.isfinite(outpaint).all()
    with pytest.raises(InputError, match="--init-image with --mask or --outpaint"):
        _latents(backbone, GenerationRequest())
    with pytest.raises(IncompatibleError, match="loads with --backbone flux-fill"):
        load_component("backbone", "flux", folders["fill"], device="cpu")
    with pytest.raises(IncompatibleError, match="needs a FLUX.1 Fill transformer"):
        load_component("backbone", "flux-fill", folders["base"], device="cpu")


def test_kontext_puts_the_source_image_in_the_sequence_at_the_asked_size(folders, images):
    backbone = load_component("backbone", "flux-kontext", folders["base"], device="cpu")
    assert isinstance(backbone, FluxKontextBackbone) and backbone.default_guidance == 2.5
    lengths = []
    hook = backbone.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["hidden_states"].shape[1]), with_kwargs=True)
    try:
        # a 64x48 source, a 24x16 output: the source is resized to the output, never to ~1024²
        edited = _latents(backbone, GenerationRequest(init_image=images["big"]), height=16, width=24)
    finally:
        hook.remove()
    assert lengths and set(lengths) == {2 * (16 // 4) * (24 // 4)}  # the image tokens + as many source tokens
    assert edited.shape == (1, (16 // 4) * (24 // 4), 16)
    other = _latents(backbone, GenerationRequest(init_image=images["blue"]), height=16, width=24)
    plain = _latents(backbone, None, height=16, width=24)
    assert not torch.equal(edited, other) and not torch.equal(edited, plain)
    with pytest.raises(InputError, match="--strength"):
        _latents(backbone, GenerationRequest(init_image=images["red"], strength=0.5))


def _turbo_like_lora(folder) -> str:
    """A diffusers-layout LoRA of the tiny transformer, saved under Turbo-Alpha's file name."""
    transformer = tiny_transformer()
    torch.manual_seed(3)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "proj_out"])
    transformer.add_adapter(config)
    FluxPipeline.save_lora_weights(str(folder), transformer_lora_layers=get_peft_model_state_dict(transformer),
                                   transformer_lora_adapter_metadata=config.to_dict(),
                                   weight_name="diffusion_pytorch_model.safetensors")
    return str(folder)


def test_turbo_loads_its_lora_with_the_backbone(folders, tmp_path):
    lora = _turbo_like_lora(tmp_path / "turbo-alpha")
    turbo = load_component("backbone", "flux-turbo", folders["base"], device="cpu", lora=lora)
    assert (turbo.default_steps, turbo.default_guidance) == (8, 3.5)
    assert list(turbo.transformer.peft_config) == ["x2i_lora_0"]
    base = load_component("backbone", "flux-dev", folders["base"], device="cpu")
    assert not torch.equal(_latents(turbo), _latents(base))
    low = load_component("backbone", "flux-turbo", folders["base"], device="cpu", lora=lora, memory="low")
    q = low.transformer.transformer_blocks[0].attn.to_q
    assert q.base_layer.weight.dtype == torch.float8_e4m3fn and q.lora_A["x2i_lora_0"].weight.dtype == torch.float32
    assert torch.isfinite(_latents(low)).all()
    with pytest.raises(CheckpointError, match="not found"):
        load_component("backbone", "flux-turbo", folders["base"], device="cpu", lora=str(tmp_path / "nowhere"))


def test_cli_transformer_file_and_the_flex_note(folders, tmp_path_factory):
    from click.testing import CliRunner

    from _adapter_world import generate_args, write_encoder_and_aligner
    from x2i_cli.main import cli
    from x2i_core.generate import X2IPipeline

    root = tmp_path_factory.mktemp("presets-cli")
    qwen, align = write_encoder_and_aligner(root)  # its AlignNet records backbone "flux"
    torch.manual_seed(7)
    file = root / "my_finetune.safetensors"
    save_file(tiny_transformer().state_dict(), str(file))
    args = generate_args(qwen, folders["base"], align, root / "out.png")
    ok = CliRunner().invoke(cli, [*args, "--transformer-file", str(file)])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(cli, [*args, "--transformer-file", str(root / "model.ckpt")])
    assert bad.exit_code == 2 and "must be a .safetensors file" in bad.output
    pipe = X2IPipeline.from_names("qwen2.5-vl", "flex", align, encoder_path=qwen, backbone_path=folders["flex"],
                                  device="cpu")
    assert any("flex has its own block layout" in note and "aligned on flux" in note for note in pipe.backbone.notes)


def test_cli_fill_and_kontext(folders, images, tmp_path_factory):
    from click.testing import CliRunner

    from _adapter_world import generate_args, write_encoder_and_aligner
    from x2i_cli.main import cli
    from x2i_core.generate import read_metadata

    root = tmp_path_factory.mktemp("variants-cli")
    qwen, align = write_encoder_and_aligner(root)
    for preset, folder, extra in (("flux-fill", folders["fill"], ["--init-image", images["red"], "--mask", images["mask"]]),
                                  ("flux-kontext", folders["base"], ["--init-image", images["big"]])):
        out = root / f"{preset}.png"
        args = generate_args(qwen, folder, align, out)
        args[args.index("flux")] = preset
        size = args.index("--width")
        del args[size:size + 4]  # the size comes from the init image
        result = CliRunner().invoke(cli, [*args, *extra])
        assert result.exit_code == 0, result.output
        meta = read_metadata(out)
        assert meta["backbone"].startswith(preset) and "init_image" in meta
    from PIL import Image

    assert Image.open(root / "flux-kontext.png").size == (64, 48)  # the init image's size, not ~1024²
    args = generate_args(qwen, folders["fill"], align, root / "bad.png")
    args[args.index("flux")] = "flux-fill"
    bad = CliRunner().invoke(cli, args)
    assert bad.exit_code == 2 and "--init-image with --mask or --outpaint" in bad.output

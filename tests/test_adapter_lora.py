"""The `lora` adapter: LoRA files in the diffusers, kohya and XLabs layouts, written here from a tiny Flux transformer."""
import types

import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from x2i_core.errors import CheckpointError, IncompatibleError
from x2i_core.interfaces import Conditioning
from x2i_core.plugins import get_registry, load_component
from x2i_plugins.adapters.lora.adapter import LoraAdapter
from x2i_plugins.backbones.flux.backbone import FluxBackbone
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, tiny_transformer, write_tiny_flux

H = W = 32
WIDTH = 32  # the tiny transformer's inner width (2 heads x 16)
MLP = 4 * WIDTH
RANK = 4


def _diffusers_lora(folder, transformer, seed):
    """A peft LoRA on a copy of the tiny transformer, saved with FluxPipeline.save_lora_weights (alpha kept)."""
    torch.manual_seed(seed)
    config = LoraConfig(r=RANK, lora_alpha=2 * RANK, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_out"])
    transformer.add_adapter(config)
    layers = get_peft_model_state_dict(transformer)
    FluxPipeline.save_lora_weights(str(folder), transformer_lora_layers=layers,
                                   transformer_lora_adapter_metadata=config.to_dict())
    return str(folder)


def _kohya_lora(path, seed):
    """sd-scripts keys; no `single_blocks_N_linear1` (diffusers' converter hard-codes real FLUX widths for it)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, (out_dim, in_dim) in {"lora_unet_double_blocks_0_img_attn_qkv": (3 * WIDTH, WIDTH),
                                   "lora_unet_double_blocks_0_img_attn_proj": (WIDTH, WIDTH),
                                   "lora_unet_single_blocks_0_linear2": (WIDTH, WIDTH + MLP)}.items():
        tensors[f"{key}.lora_down.weight"] = torch.randn(RANK, in_dim, generator=g) * 0.3
        tensors[f"{key}.lora_up.weight"] = torch.randn(out_dim, RANK, generator=g) * 0.3
        tensors[f"{key}.alpha"] = torch.tensor(float(RANK))
    save_file(tensors, str(path))
    return str(path)


def _xlabs_lora(path, seed):
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, out_dim in (("qkv_lora1", 3 * WIDTH), ("proj_lora1", WIDTH), ("qkv_lora2", 3 * WIDTH),
                         ("proj_lora2", WIDTH)):
        tensors[f"double_blocks.0.processor.{key}.down.weight"] = torch.randn(RANK, WIDTH, generator=g) * 0.3
        tensors[f"double_blocks.0.processor.{key}.up.weight"] = torch.randn(out_dim, RANK, generator=g) * 0.3
    save_file(tensors, str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    flux = write_tiny_flux(root / "flux", seed=0, with_teacher=False)
    same = tiny_transformer()  # the same architecture...
    other = _wider_transformer()  # ...and one of other widths
    return types.SimpleNamespace(
        flux=flux,
        diffusers=_diffusers_lora(root / "diffusers", same, 1),
        kohya=_kohya_lora(root / "kohya.safetensors", 2),
        xlabs=_xlabs_lora(root / "xlabs.safetensors", 3),
        other=_diffusers_lora(root / "other-arch", other, 4),
        root=root,
    )


def _wider_transformer():
    return FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                  attention_head_dim=24, num_attention_heads=2, joint_attention_dim=PROMPT_DIM,
                                  pooled_projection_dim=POOLED_DIM, guidance_embeds=True, axes_dims_rope=(4, 10, 10))


@pytest.fixture(scope="module")
def backbone(files):
    return FluxBackbone.from_pretrained(files.flux, device="cpu")


def _cond(seed, length=5):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(1, length, PROMPT_DIM, generator=g), torch.randn(1, POOLED_DIM, generator=g))


def _sample(backbone, cfg=False):
    kw = dict(height=H, width=W, num_inference_steps=2, guidance_scale=3.5,
              generator=[torch.Generator().manual_seed(0)])
    if cfg:
        kw.update(negative=_cond(7, 3), true_cfg_scale=3.0)
    return backbone.denoise(_cond(0), **kw)


def _with(backbone, adapters, cfg=False):
    for adapter in adapters:
        adapter.apply(backbone)
    try:
        return _sample(backbone, cfg)
    finally:
        for adapter in reversed(adapters):
            adapter.remove(backbone)


def test_registered_and_listed():
    assert "lora" in get_registry().names("adapter")


@pytest.mark.parametrize("layout", ["diffusers", "kohya", "xlabs"])
@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "true-cfg"])
def test_each_layout_loads_and_changes_the_image(backbone, files, layout, cfg):
    base = _sample(backbone, cfg)
    lora = load_component("adapter", "lora", getattr(files, layout))
    changed = _with(backbone, [lora], cfg)
    assert (changed - base).abs().max() > 1e-3
    assert torch.equal(_sample(backbone, cfg), base)  # remove() restores the transformer exactly


def test_scale_zero_is_no_lora_and_scales_differ(backbone, files):
    base = _sample(backbone)
    assert torch.equal(_with(backbone, [LoraAdapter.from_pretrained(files.kohya, scale=0.0)]), base)
    half = _with(backbone, [LoraAdapter.from_pretrained(files.kohya, scale=0.5)])
    full = _with(backbone, [LoraAdapter.from_pretrained(files.kohya, scale=1.0)])
    assert (half - full).abs().max() > 1e-4 and (half - base).abs().max() > 1e-4


def test_several_at_once_with_weights(backbone, files):
    one = _with(backbone, [LoraAdapter.from_pretrained(files.diffusers)])
    both = _with(backbone, [LoraAdapter.from_pretrained(files.diffusers), LoraAdapter.from_pretrained(files.xlabs)])
    muted = _with(backbone, [LoraAdapter.from_pretrained(files.diffusers),
                             LoraAdapter.from_pretrained(files.xlabs, scale=0.0)])
    assert (both - one).abs().max() > 1e-4
    torch.testing.assert_close(muted, one)


def test_fuse_gives_the_same_image(backbone, files):
    base = _sample(backbone)
    unfused = _with(backbone, [LoraAdapter.from_pretrained(files.kohya, scale=0.7)])
    fused = _with(backbone, [LoraAdapter.from_pretrained(files.kohya, scale=0.7, fuse=True)])
    torch.testing.assert_close(fused, unfused, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_sample(backbone), base)  # unfused and deleted again
    assert (fused - base).abs().max() > 1e-3


def test_other_architecture_is_one_line_and_changes_nothing(backbone, files):
    base = _sample(backbone)
    lora = LoraAdapter.from_pretrained(files.other)
    with pytest.raises(IncompatibleError, match="another architecture") as info:
        lora.apply(backbone)
    assert "\n" not in str(info.value)
    assert torch.equal(_sample(backbone), base)
    sd_unet = files.root / "sd15.safetensors"  # an SD 1.5 kohya LoRA: no FLUX key at all
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4)}, str(sd_unet))
    with pytest.raises(IncompatibleError):
        LoraAdapter.from_pretrained(str(sd_unet))
    real_flux = files.root / "real-flux-kohya.safetensors"  # single_blocks linear1 split at FLUX.1's real widths
    save_file({"lora_unet_single_blocks_0_linear1.lora_down.weight": torch.zeros(RANK, WIDTH),
               "lora_unet_single_blocks_0_linear1.lora_up.weight": torch.zeros(3 * WIDTH + MLP, RANK)}, str(real_flux))
    with pytest.raises(IncompatibleError, match="another architecture or size") as info:
        LoraAdapter.from_pretrained(str(real_flux))
    assert "\n" not in str(info.value)


def test_bad_files_are_one_line(files):
    pickle = files.root / "lora.bin"
    pickle.write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="safetensors"):
        LoraAdapter.from_pretrained(str(pickle))
    with pytest.raises(CheckpointError, match="not found"):
        LoraAdapter.from_pretrained(str(files.root / "missing.safetensors"))
    empty = files.root / "empty-folder"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no .safetensors"):
        LoraAdapter.from_pretrained(str(empty))


# -- through `x2i generate` and the API, on the built-in shapes world --------------------------------
def _shapes_lora(path, scale=0.5):
    """An XLabs-layout LoRA for the shapes world's transformer (its widths read from its config)."""
    import json

    from x2i_plugins.worlds.shapes import TEACHER_DIR

    config = json.loads((TEACHER_DIR / "transformer" / "config.json").read_text())
    width = config["num_attention_heads"] * config["attention_head_dim"]
    g = torch.Generator().manual_seed(11)
    tensors = {}
    for key, out_dim in (("qkv_lora1", 3 * width), ("proj_lora1", width)):
        tensors[f"double_blocks.0.processor.{key}.down.weight"] = torch.randn(RANK, width, generator=g) * scale
        tensors[f"double_blocks.0.processor.{key}.up.weight"] = torch.randn(out_dim, RANK, generator=g) * scale
    save_file(tensors, str(path))
    return str(path)


def _cli(args):
    from click.testing import CliRunner

    from x2i_cli.main import cli

    return CliRunner().invoke(cli, ["generate", "a red circle", "--steps", "2", *args])


def test_cli_lora_on_the_default_world(tmp_path, files):
    import numpy as np
    from PIL import Image

    from x2i_core.generate import read_metadata

    lora = _shapes_lora(tmp_path / "shapes-lora.safetensors")
    outs = {name: tmp_path / f"{name}.png" for name in ("base", "lora")}
    for name, extra in (("base", []), ("lora", ["--lora", f"{lora}:0.8", "--lora-fuse"])):
        result = _cli(["-o", str(outs[name]), *extra])
        assert result.exit_code == 0, result.output
    pixels = {name: np.asarray(Image.open(path), dtype=int) for name, path in outs.items()}
    assert np.abs(pixels["lora"] - pixels["base"]).max() > 8
    assert read_metadata(outs["lora"])["adapters"] == f"lora:{lora}@0.8"
    assert "adapters" not in read_metadata(outs["base"])
    wrong = _cli(["-o", str(tmp_path / "wrong.png"), "--lora", files.kohya])  # made for the tiny test transformer
    lines = wrong.stderr.strip().splitlines()
    assert wrong.exit_code == 2 and lines[-1].startswith("Error: ") and "another architecture" in lines[-1]
    assert len(lines) <= 2  # at most the default world's one-line notice before it


def test_api_takes_adapters_by_choice(tmp_path):
    from x2i_core.generate import X2IPipeline
    from x2i_core.request import AdapterChoice

    lora = _shapes_lora(tmp_path / "l.safetensors")
    pipe = X2IPipeline.from_names("shapes-mllm", "shapes", "shapes", device="cpu",
                                  adapters=[AdapterChoice.parse("lora", f"{lora}:0.25")])
    image = pipe("a red circle", steps=2)[0]
    assert image.info["adapters"] == f"lora:{lora}@0.25"
    assert AdapterChoice.parse("lora", "C:\\loras\\a.safetensors").pretrained == "C:\\loras\\a.safetensors"


@pytest.mark.parametrize("level", ["low", "lowest"])
def test_lora_on_fp8_and_offloaded_memory_levels(files, level):
    """LoRAs come after the memory level (X2IPipeline applies them to a loaded backbone): fp8 storage and group
    offload must not quantise the LoRA or break the call."""
    backbone = FluxBackbone.from_pretrained(files.flux, device="cpu", memory=level)
    base = _sample(backbone)
    lora = LoraAdapter.from_pretrained(files.kohya, fuse=True)
    lora.apply(backbone)
    try:
        lora_dtypes = {p.dtype for n, p in backbone.transformer.named_parameters() if "lora_" in n}
        base_dtypes = {p.dtype for n, p in backbone.transformer.named_parameters() if n.endswith("to_q.base_layer.weight")}
        assert lora_dtypes == {torch.float32} and base_dtypes == {torch.float8_e4m3fn}
        assert (_sample(backbone) - base).abs().max() > 1e-3
        assert any("--lora-fuse skipped" in note for note in backbone.notes)
    finally:
        lora.remove(backbone)
    assert torch.equal(_sample(backbone), base)

"""--memory levels on CPU: what runs here (group offload, fp8 layerwise casting, VAE tiling), model offload as a note,
the old --offload as an alias, and the benchmark's tiny scale."""
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from x2i_cli.main import cli
from x2i_core.alignnet import AlignNet
from x2i_core.errors import InputError
from x2i_core.generate import X2IPipeline, read_metadata
from x2i_core.interfaces import Conditioning
from x2i_core.memory import MEMORY_LEVELS, resolve_memory_level
from x2i_plugins.backbones.flux.backbone import FluxBackbone
from x2i_plugins.backbones.flux.memory import RECIPES
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux
from x2i_plugins.encoders.qwen25vl.tiny import write_tiny_qwen25vl

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
H = W = 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    qwen = write_tiny_qwen25vl(root / "qwen", seed=0)
    flux = write_tiny_flux(root / "flux", seed=0, with_teacher=False)
    from x2i_core.plugins import load_component

    enc = load_component("encoder", "qwen2.5-vl", qwen, device="cpu")
    torch.manual_seed(0)
    AlignNet(num_layers=enc.num_layers, hidden_size=enc.hidden_size, prompt_dim=PROMPT_DIM, pooled_dim=POOLED_DIM,
             encoder="qwen2.5-vl", backbone="flux").save_pretrained(root / "align")
    return {"qwen": qwen, "flux": flux, "align": str(root / "align")}


@pytest.fixture(scope="module")
def latents_by_level(folders):
    g = torch.Generator().manual_seed(0)
    cond = Conditioning(torch.randn(1, 5, PROMPT_DIM, generator=g), torch.randn(1, POOLED_DIM, generator=g))
    out = {}
    for level in MEMORY_LEVELS:
        backbone = FluxBackbone.from_pretrained(folders["flux"], device="cpu", memory=level)
        latents = backbone.denoise(cond, height=H, width=W, num_inference_steps=2, guidance_scale=3.5,
                                   generator=[torch.Generator().manual_seed(0)])
        out[level] = (backbone, latents)
    return out


def test_level_names_and_the_offload_alias():
    assert MEMORY_LEVELS == ("high", "balanced", "low", "lowest") and tuple(RECIPES) == MEMORY_LEVELS
    assert resolve_memory_level() == "high" and resolve_memory_level(offload=True) == "balanced"
    assert resolve_memory_level("LOW") == "low"
    with pytest.raises(InputError, match="use one of high, balanced, low, lowest"):
        resolve_memory_level("tiny")
    with pytest.raises(InputError, match="cannot be combined"):
        resolve_memory_level("high", offload=True)


def test_every_level_generates_and_says_what_cpu_skips(latents_by_level):
    for level, (backbone, latents) in latents_by_level.items():
        assert backbone.memory == level and torch.isfinite(latents).all()
        offloads = RECIPES[level].placement == "model_offload"
        assert any("no effect on CPU" in note for note in backbone.notes) == offloads
        assert backbone.offload == (level != "high")


def test_balanced_gives_the_images_of_high(latents_by_level):
    assert torch.equal(latents_by_level["high"][1], latents_by_level["balanced"][1])


def test_fp8_levels_store_fp8_and_stay_close(latents_by_level):
    high = latents_by_level["high"][1]
    for level in ("low", "lowest"):
        backbone, latents = latents_by_level[level]
        weight = backbone.transformer.transformer_blocks[0].attn.to_q.weight
        assert weight.dtype == torch.float8_e4m3fn
        assert not torch.equal(latents, high)  # fp8 rounding is real ...
        assert (latents - high).abs().mean() < 0.25 * high.abs().mean()  # ... and small
    assert latents_by_level["high"][0].transformer.transformer_blocks[0].attn.to_q.weight.dtype == torch.float32


def test_lowest_group_offloads_and_tiles(latents_by_level):
    from diffusers.hooks import HookRegistry

    backbone = latents_by_level["lowest"][0]
    hooks = HookRegistry.check_if_exists_or_initialize(backbone.transformer.transformer_blocks[0]).hooks
    assert any("group_offloading" in name for name in hooks)
    assert backbone.vae.use_tiling and backbone.vae.use_slicing
    assert not latents_by_level["high"][0].vae.use_tiling
    # the tiny VAE's sample size is 32 px: 64 px decodes tile by tile
    rows = backbone.latent_grid(64, 64)
    images = backbone.decode(torch.randn(1, rows[0] * rows[1], 16), 64, 64)
    assert images[0].size == (64, 64)


def test_api_and_cli_take_memory(folders, tmp_path):
    pipe = X2IPipeline.from_names("qwen2.5-vl", "flux", folders["align"], encoder_path=folders["qwen"],
                                  backbone_path=folders["flux"], device="cpu", memory="lowest")
    assert pipe.backbone.memory == "lowest"
    from diffusers.hooks import HookRegistry

    assert HookRegistry.check_if_exists_or_initialize(pipe.encoder.model).hooks or any(
        HookRegistry.check_if_exists_or_initialize(m).hooks for m in pipe.encoder.model.modules())
    assert pipe("a red circle", steps=1, width=H, height=W)[0].size == (W, H)
    with pytest.raises(InputError, match="unknown memory level"):
        X2IPipeline.from_names("qwen2.5-vl", "flux", folders["align"], encoder_path=folders["qwen"],
                               backbone_path=folders["flux"], device="cpu", memory="tiny")
    out = tmp_path / "low.png"
    args = ["generate", "--encoder", "qwen2.5-vl", "--encoder-path", folders["qwen"], "--backbone", "flux",
            "--backbone-path", folders["flux"], "--aligner", folders["align"], "--device", "cpu", "--steps", "1",
            "--width", str(W), "--height", str(H), "-o", str(out), "a red circle"]
    result = CliRunner().invoke(cli, [*args, "--memory", "low"])
    assert result.exit_code == 0, result.output
    assert "no effect on CPU" in result.output and read_metadata(out)["steps"] == "1"
    result = CliRunner().invoke(cli, [*args, "--memory", "high", "--offload"])
    assert result.exit_code == 2 and "cannot be combined" in result.output


def test_benchmark_tiny_scale_runs_on_cpu(capsys):
    sys.path.insert(0, str(BENCH))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import bench_memory_gpu

        assert bench_memory_gpu.main(["--scale", "tiny", "--size", "16", "--steps", "1"]) == 0
        assert bench_memory_gpu.main(["--levels", "high,huge", "--scale", "tiny"]) == 2
    finally:
        torch.set_num_threads(before)
        sys.path.remove(str(BENCH))
    out = capsys.readouterr().out
    for level in (*MEMORY_LEVELS, "T5+CLIP"):
        assert f"| {level} |" in out
    assert "16x16, 1 steps" in out and "x2i (high) / T5+CLIP end to end" in out


def test_quantize_refusals_are_one_line(folders):
    """bitsandbytes needs CUDA: on this CPU machine only the refusals run (the quantised path is GPU-only)."""
    for kwargs, line in (({"quantize": "int4"}, "unknown quantisation"),
                         ({"quantize": "nf4"}, "needs a CUDA GPU")):
        with pytest.raises(InputError, match=line):
            FluxBackbone.from_pretrained(folders["flux"], device="cpu", **kwargs)
    from x2i_plugins.backbones.flux.memory import quantization_config

    with pytest.raises(InputError, match="use it with --memory high or balanced"):
        quantization_config("int8", "low", torch.device("cuda"), torch.bfloat16)

"""AlignNet: shapes, masking, fusions, save/load, fit checks and reference-format conversion."""
import pickle

import pytest
import torch

from x2i_core.alignnet import AlignNet
from x2i_core.convert import convert_reference
from x2i_core.errors import CheckpointError, IncompatibleError


def tiny(**kw):
    torch.manual_seed(0)
    return AlignNet(**{"num_layers": 3, "hidden_size": 16, "prompt_dim": 32, "pooled_dim": 24, **kw})


def test_paper_size_parameter_count():
    # method.md: about 34.6 M parameters for H=3584 (Qwen2.5-VL-7B, 29 hidden states)
    with torch.device("meta"):
        model = AlignNet(num_layers=29, hidden_size=3584)
    assert abs(model.num_parameters() / 1e6 - 34.6) < 0.1


@pytest.mark.parametrize("fusion", ["conv", "scale", "last"])
def test_shapes(fusion):
    model = tiny(fusion=fusion)
    out = model(torch.randn(2, 3, 7, 16), torch.ones(2, 7, dtype=torch.bool))
    assert out.prompt_embeds.shape == (2, 7, 32)
    assert out.pooled_prompt_embeds.shape == (2, 24)
    assert out.attention_mask.dtype == torch.bool


def test_padding_does_not_change_real_tokens_or_pooled():
    model = tiny()
    x = torch.randn(1, 3, 4, 16)
    padded = torch.cat([x, torch.randn(1, 3, 3, 16)], dim=2)  # garbage in padded slots
    mask = torch.tensor([[True] * 4 + [False] * 3])
    a, b = model(x, None), model(padded, mask)
    torch.testing.assert_close(a.prompt_embeds, b.prompt_embeds[:, :4])
    torch.testing.assert_close(a.pooled_prompt_embeds, b.pooled_prompt_embeds)


def test_unmasked_pool_matches_reference_mean():
    model = tiny(masked_pool=False)
    x, mask = torch.randn(1, 3, 5, 16), torch.tensor([[True, True, True, False, False]])
    out = model(x, mask)
    per_token = model.pooled_proj(torch.nn.functional.gelu(out.prompt_embeds))
    torch.testing.assert_close(out.pooled_prompt_embeds, per_token.mean(1))
    masked = tiny(masked_pool=True)(x, mask).pooled_prompt_embeds
    assert not torch.allclose(masked, out.pooled_prompt_embeds)


def test_wrong_input_shape_is_explained():
    with pytest.raises(ValueError, match="expects hidden states"):
        tiny()(torch.randn(1, 4, 5, 16))


def test_save_and_load_roundtrip(tmp_path):
    model = tiny(encoder="tiny-enc", backbone="tiny-flux")
    model.save_pretrained(tmp_path / "a")
    assert (tmp_path / "a" / "config.json").is_file()
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "a").iterdir())
    loaded = AlignNet.from_pretrained(tmp_path / "a")
    assert loaded.config.encoder == "tiny-enc"
    x = torch.randn(1, 3, 6, 16)
    torch.testing.assert_close(loaded(x).prompt_embeds, model(x).prompt_embeds)


def test_load_errors_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        AlignNet.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        AlignNet.from_pretrained(tmp_path / "empty")
    tiny().save_pretrained(tmp_path / "broken")
    weights = next(p for p in (tmp_path / "broken").iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot load"):
        AlignNet.from_pretrained(tmp_path / "broken")


class _Shape:
    def __init__(self, layers, hidden, prompt=32, pooled=24):
        self.num_layers, self.hidden_size = layers, hidden
        self.prompt_embed_dim, self.pooled_embed_dim = prompt, pooled
        self.identity = f"fake({layers}x{hidden})"


def test_fit_checks_name_the_mismatch():
    model = tiny(encoder="qwen2.5-vl-7b")
    model.check_fits(_Shape(3, 16), _Shape(3, 16))
    with pytest.raises(IncompatibleError, match=r"expects 3 layers of width 16 \(made for qwen2.5-vl-7b\)"):
        model.check_fits(_Shape(37, 2048))
    with pytest.raises(IncompatibleError, match="prompt/pooled widths 32/24"):
        model.check_fits(None, _Shape(3, 16, prompt=4096, pooled=768))


def _reference_state_dict(fusion="conv", layers=3, hidden=16, prompt=32, pooled=24):
    g = torch.Generator().manual_seed(1)
    sd = {
        "mlp.layernorm.weight": torch.rand(hidden, generator=g),
        "mlp.layernorm.bias": torch.rand(hidden, generator=g),
        "mlp.projector.0.weight": torch.randn(prompt, hidden, generator=g),
        "mlp.projector.2.weight": torch.randn(prompt, prompt, generator=g),
        "mlp.fc.1.weight": torch.randn(pooled, prompt, generator=g),
        "mlp.fc.1.bias": torch.randn(pooled, generator=g),
    }
    if fusion == "conv":
        sd["conv.weight"] = torch.randn(1, layers, 5, 5, generator=g)
        sd["conv.bias"] = torch.randn(1, generator=g)
    else:
        sd["cha_scale"] = torch.rand(1, layers, 1, 1, generator=g)
    return sd


def _reference_forward(sd, x):
    """The reference computation written out from method.md, to check the converted model."""
    if "conv.weight" in sd:
        fused = torch.nn.functional.conv2d(x, sd["conv.weight"], sd["conv.bias"], padding=2).squeeze(1)
    else:
        fused = (x * sd["cha_scale"]).mean(1)
    h = torch.nn.functional.layer_norm(fused, fused.shape[-1:], sd["mlp.layernorm.weight"], sd["mlp.layernorm.bias"], 1e-6)
    prompt = torch.nn.functional.gelu(h @ sd["mlp.projector.0.weight"].T) @ sd["mlp.projector.2.weight"].T
    pooled = (torch.nn.functional.gelu(prompt) @ sd["mlp.fc.1.weight"].T + sd["mlp.fc.1.bias"]).mean(1)
    return prompt, pooled


@pytest.mark.parametrize("fusion", ["conv", "scale"])
@pytest.mark.parametrize("layout", ["bin", "hub_pt"])
def test_convert_reference_formats(tmp_path, fusion, layout):
    sd = _reference_state_dict(fusion)
    if layout == "bin":
        src = tmp_path / "diffusion_pytorch_model.bin"
        torch.save(sd, src)
    else:
        src = tmp_path / "qwen2.5-vl-7b_proj.pt"
        torch.save({"config": {"num_layers": 3, "hidden": 16}, "state_dict": {"module." + k: v for k, v in sd.items()}}, src)
    out = convert_reference(src, tmp_path / "converted", encoder="qwen2.5-vl-7b")
    model = AlignNet.from_pretrained(out)
    assert model.config.fusion == fusion and model.config.masked_pool is False
    x = torch.randn(1, 3, 6, 16)
    prompt, pooled = _reference_forward(sd, x)
    got = model(x)
    torch.testing.assert_close(got.prompt_embeds, prompt, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.pooled_prompt_embeds, pooled, rtol=1e-4, atol=1e-4)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_convert_refuses_pickled_objects(tmp_path, capsys):
    src = tmp_path / "evil.bin"
    with open(src, "wb") as f:
        pickle.dump({"conv.weight": Evil()}, f)
    with pytest.raises(CheckpointError, match="refusing to unpickle") as caught:
        convert_reference(src, tmp_path / "out")
    assert "this must never run" not in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    # torch's own text advises weights_only=False (running the file's code): never passed on
    assert "weights_only" not in str(caught.value) and "False" not in str(caught.value)
    with open(src, "wb") as f:
        pickle.dump({"conv.weight": Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"holds pickled Python objects, not only tensors \(GLOBAL print\)"):
        convert_reference(src, tmp_path / "out")
    assert "this must never run" not in capsys.readouterr().out


def test_convert_rejects_other_checkpoints(tmp_path):
    torch.save({"encoder.layer.0.weight": torch.zeros(2)}, tmp_path / "other.bin")
    with pytest.raises(CheckpointError, match="unexpected keys"):
        convert_reference(tmp_path / "other.bin", tmp_path / "out")
    with pytest.raises(CheckpointError, match="not found"):
        convert_reference(tmp_path / "nope.bin", tmp_path / "out")


def test_convert_cli(tmp_path):
    from click.testing import CliRunner

    from x2i_cli.main import cli

    torch.save(_reference_state_dict(), tmp_path / "diffusion_pytorch_model.bin")
    result = CliRunner().invoke(cli, ["convert", str(tmp_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert AlignNet.from_pretrained(tmp_path / "out").config.hidden_size == 16
    bad = CliRunner().invoke(cli, ["convert", str(tmp_path / "missing.bin"), "-o", str(tmp_path / "o2")])
    assert bad.exit_code == 2
    assert bad.output.strip().startswith("Error:") and len(bad.output.strip().splitlines()) == 1


def test_convert_refuses_unwritable_outputs_records_names_and_follows_the_umask(tmp_path):
    import os

    from click.testing import CliRunner

    from _writable import read_only_dir
    from x2i_cli.main import cli

    torch.save(_reference_state_dict(), tmp_path / "diffusion_pytorch_model.bin")
    (tmp_path / "some.txt").write_text("a file")
    read_only = read_only_dir(tmp_path)
    for output, match in ((tmp_path / "some.txt" / "out", "some.txt is a file"),
                          (tmp_path / "some.txt", "a file is in the way"),
                          (read_only / "out", f"cannot write in {read_only}")):
        bad = CliRunner().invoke(cli, ["convert", str(tmp_path / "diffusion_pytorch_model.bin"), "-o", str(output)])
        assert bad.exit_code == 2 and bad.output.count("\n") == 1 and match in bad.output, bad.output
    previous = os.umask(0o027)
    try:
        out = convert_reference(tmp_path / "diffusion_pytorch_model.bin", tmp_path / "net", encoder="qwen2.5-vl-7b",
                                backbone="flux-dev")
    finally:
        os.umask(previous)
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
        "config.json": 0o640, "diffusion_pytorch_model.safetensors": 0o640}
    config = AlignNet.from_pretrained(out).config
    assert (config.encoder, config.backbone, config.encoder_checkpoint, config.resolution) == (
        "qwen2.5-vl-7b", "flux-dev", None, None)  # names as given; a converted net knows no checkpoint or resolution


@pytest.mark.parametrize("train", [False, True])
def test_context_layers_see_later_tokens_and_ignore_padding(train, tmp_path):
    model = tiny(fusion="scale", context_layers=1).train(train)
    x = torch.randn(1, 3, 4, 16)
    padded = torch.cat([x, torch.randn(1, 3, 3, 16)], dim=2)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    a, b = model(x, None), model(padded, mask)
    torch.testing.assert_close(a.prompt_embeds, b.prompt_embeds[:, :4])
    torch.testing.assert_close(a.pooled_prompt_embeds, b.pooled_prompt_embeds)
    later = x.clone()
    later[:, :, 3] = torch.randn(1, 3, 16)  # the last token changes: with context the first token's output too
    assert not torch.allclose(model(later, None).prompt_embeds[:, 0], a.prompt_embeds[:, 0])
    model.save_pretrained(tmp_path / "net")
    loaded = AlignNet.from_pretrained(tmp_path / "net").train(train)
    assert loaded.config.context_layers == 1
    torch.testing.assert_close(loaded(x, None).prompt_embeds, a.prompt_embeds)
    with pytest.raises(ValueError, match="context_layers"):
        tiny(context_layers=-1)


def test_token_kernel_one_keeps_each_output_token_to_its_own_input_token(tmp_path):
    model = tiny(token_kernel=1)
    assert tuple(model.layer_fusion.weight.shape[-2:]) == (1, 5)  # mixes layers and hidden dims, not tokens
    x, mask = torch.randn(1, 3, 7, 16), torch.ones(1, 7, dtype=torch.bool)
    changed = x.clone()
    changed[:, :, 3] += 1.0
    moved = (model(changed, mask).prompt_embeds - model(x, mask).prompt_embeds).abs().sum(-1)[0]
    assert moved[3] > 0 and torch.count_nonzero(moved) == 1
    square = tiny()  # the paper's 5x5: neighbours within two tokens move too
    moved = (square(changed, mask).prompt_embeds - square(x, mask).prompt_embeds).abs().sum(-1)[0]
    assert torch.count_nonzero(moved) == 5
    model.save_pretrained(tmp_path / "net")
    assert AlignNet.from_pretrained(tmp_path / "net").config.token_kernel == 1
    for bad in (0, 2):
        with pytest.raises(ValueError, match="token_kernel"):
            tiny(token_kernel=bad)


@pytest.mark.parametrize("fusion", ["conv", "scale"])
def test_skip_layers_ignores_the_left_out_hidden_states(fusion, tmp_path):
    model = tiny(fusion=fusion, skip_layers=1)
    x, mask = torch.randn(2, 3, 7, 16), torch.ones(2, 7, dtype=torch.bool)
    changed = x.clone()
    changed[:, 0] = torch.randn(2, 7, 16) * 100  # the token-embedding output, left out
    a, b = model(x, mask), model(changed, mask)
    assert torch.equal(a.prompt_embeds, b.prompt_embeds) and torch.equal(a.pooled_prompt_embeds, b.pooled_prompt_embeds)
    changed[:, 1] += 1.0  # a fused layer still matters
    assert not torch.allclose(model(changed, mask).prompt_embeds, a.prompt_embeds)
    model.save_pretrained(tmp_path / "net")
    loaded = AlignNet.from_pretrained(tmp_path / "net")
    assert loaded.config.skip_layers == 1 and torch.equal(loaded(x, mask).prompt_embeds, a.prompt_embeds)
    with pytest.raises(ValueError, match="skip_layers"):
        tiny(skip_layers=3)

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


# -- x2i train-lightcontrol ------------------------------------------------------------------------------------------
def _edit_folder(root, count=4, size=16):
    """A tiny edit folder: coloured squares, "make it <colour>" -> the square recoloured."""
    from pathlib import Path

    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    colours = {"red": (220, 40, 40), "blue": (40, 80, 230), "green": (40, 170, 60), "yellow": (240, 220, 30)}
    names, lines = list(colours), []
    for i in range(count):
        src, new = names[i % 4], names[(i + 1) % 4]
        for tag, colour in (("src", src), ("tgt", new)):
            image = Image.new("RGB", (size, size), (255, 255, 255))
            image.paste(colours[colour], (2 + i % 3, 3, 10 + i % 3, 11))
            image.save(root / "img" / f"{i}-{tag}.png")
        lines.append(json.dumps({"inputs": [f"img/{i}-src.png"], "instruction": f"make it {new}",
                                 "target": f"img/{i}-tgt.png"}))
    (root / "index.jsonl").write_text("\n".join(lines) + "\n")
    return str(root)


@pytest.fixture(scope="module")
def world(files, tmp_path_factory):
    from _adapter_world import write_encoder_and_aligner

    root = tmp_path_factory.mktemp("lc-train")
    qwen, align = write_encoder_and_aligner(root)
    return dict(qwen=qwen, align=align, flux=files["flux"], data=_edit_folder(root / "edits"))


def _config(world, out, **overrides):
    from x2i_core.lightcontrol_train import LightControlConfig

    settings = dict(data=world["data"], output_dir=str(out), encoder="qwen2.5-vl", encoder_path=world["qwen"],
                    backbone="flux", backbone_path=world["flux"], aligner=world["align"], hidden_channels="8,16",
                    steps=6, batch_size=2, lr=3e-3, warmup=1, drop_instruction=0.0, gradient_checkpointing=False,
                    checkpoint_every=100, progress=False, device="cpu")
    settings.update(overrides)
    return LightControlConfig(**settings)


@pytest.fixture(autouse=True)
def _one_thread():
    from _align_tiny import one_thread

    yield from one_thread()


def test_training_lowers_the_loss_and_writes_a_loadable_branch(world, tmp_path):
    from x2i_core.lightcontrol_train import LightControlTask, train_lightcontrol
    from x2i_core.training import run_training

    cfg = _config(world, tmp_path / "lc", steps=12, batch_size=4, cache_inputs=True)
    cfg.validate()
    task = LightControlTask(cfg)
    result = run_training(cfg, task)
    trained = result.module.eval()
    fresh = LightControlNet.for_transformer(task.backbone.transformer.config, 4, (8, 16))
    with torch.no_grad():  # the same batch, noise and timesteps (step 0's generator) before and after
        before = float(task.step(fresh, [0, 1, 2, 3], 0, 0, 0).total)
        after = float(task.step(trained, [0, 1, 2, 3], 0, 0, 0).total)
    assert after < before
    loaded = LightControlNet.from_pretrained(str(tmp_path / "lc"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))
    record = json.loads((tmp_path / "lc" / "x2i_lightcontrol.json").read_text())
    assert record["steps"] == 12 and record["examples"] == 4
    assert callable(train_lightcontrol)


def test_kill_and_resume_give_the_same_weights(world, tmp_path):
    from x2i_core.lightcontrol_train import train_lightcontrol

    whole = train_lightcontrol(_config(world, tmp_path / "whole")).module
    first = train_lightcontrol(_config(world, tmp_path / "cut", stop_after=3))
    assert first.interrupted and first.step == 3
    resumed = train_lightcontrol(_config(world, tmp_path / "cut", resume="latest")).module
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(InputError, match="--hidden-channels"):
        train_lightcontrol(_config(world, tmp_path / "cut", resume="latest", hidden_channels="4,8", steps=8))


@pytest.mark.parametrize("problem, message", [
    ("no-target", "line 1: no 'target'"), ("unreadable", "cannot read the image"), ("empty", "holds no examples"),
    ("sizes", "must be one size"), ("missing", "image file not found"),
])
def test_bad_data_is_one_line_before_training(world, tmp_path, problem, message):
    from click.testing import CliRunner

    from x2i_cli.main import cli

    folder = _edit_folder(tmp_path / "bad", count=2)
    index = tmp_path / "bad" / "index.jsonl"
    first = json.loads(index.read_text().splitlines()[0])
    if problem == "no-target":
        del first["target"]
        index.write_text(json.dumps(first) + "\n")
    elif problem == "unreadable":
        (tmp_path / "bad" / "img" / "0-tgt.png").write_bytes(b"not a png")
    elif problem == "empty":
        index.write_text("\n")
    elif problem == "sizes":
        Image.new("RGB", (24, 16)).save(tmp_path / "bad" / "img" / "0-tgt.png")
    else:
        (tmp_path / "bad" / "img" / "1-src.png").unlink()
    result = CliRunner().invoke(cli, ["train-lightcontrol", "--data", folder, "-o", str(tmp_path / "out"),
                                      "--encoder", "qwen2.5-vl", "--encoder-path", world["qwen"], "--backbone", "flux",
                                      "--backbone-path", world["flux"], "--aligner", world["align"], "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_generate_with_lightcontrol_and_a_branch_of_another_transformer(world, files, tmp_path):
    from click.testing import CliRunner

    from _adapter_world import generate_args
    from x2i_cli.main import cli

    args = generate_args(world["qwen"], world["flux"], world["align"], tmp_path / "a.png")
    ok = CliRunner().invoke(cli, [*args[:-1], "--image", files["red"], "--lightcontrol", files["lc"], args[-1]])
    assert ok.exit_code == 0, ok.output
    other = CliRunner().invoke(cli, [*args[:-1], "--image", files["red"], "--lightcontrol", files["other"], args[-1]])
    errors = [line for line in other.output.splitlines() if line.startswith("Error:")]
    assert other.exit_code == 2 and len(errors) == 1 and "made for another architecture" in errors[0]
    alone = CliRunner().invoke(cli, [*args, "--lightcontrol-image", files["red"]])
    assert alone.exit_code == 2 and "--lightcontrol-image needs a --lightcontrol" in alone.output


def test_a_world_adds_its_edit_adapters_to_image_and_text_prompts_only(files):
    from x2i_cli.generate import _world_edit_adapters
    from x2i_core import WorldSpec

    world = WorldSpec("w", encoder="e", backbone="b", aligner="a", edit_adapters=(("lightcontrol", files["lc"], 0.5),))
    edit = MultimodalPrompt.build("make it blue", images=[files["red"]])
    chosen = _world_edit_adapters(world, edit, [], {})
    assert [(c.name, c.pretrained, c.scale) for c in chosen] == [("lightcontrol", files["lc"], 0.5)]
    assert _world_edit_adapters(world, MultimodalPrompt.build("a red circle"), [], {}) == []
    assert _world_edit_adapters(world, MultimodalPrompt.build(images=[files["red"]]), [], {}) == []
    assert _world_edit_adapters(world, edit, ["mine"], {}) == ["mine"]
    assert _world_edit_adapters(world, edit, [], {"init_image": files["red"]}) == []
    assert _world_edit_adapters(WorldSpec("w", encoder="e", backbone="b", aligner="a"), edit, [], {}) == []

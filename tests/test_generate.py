"""End to end: tiny Qwen2.5-VL + tiny AlignNet + tiny Flux, through `x2i generate` and the Python API."""
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from x2i_cli.main import cli
from x2i_core import AlignerSpec, hookimpl
from x2i_core.alignnet import AlignNet
from x2i_core.errors import IncompatibleError, InputError, PluginError
from x2i_core.generate import X2IPipeline, read_metadata, save_images
from x2i_core.plugins import get_registry
from x2i_core.testing import write_test_video
from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux
from x2i_plugins.encoders.qwen25vl.tiny import write_tiny_qwen25vl

SIZE = ["--width", "32", "--height", "32", "--steps", "2"]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Checkpoint folders (encoder, backbone, a fitting AlignNet, one made for another encoder) and media."""
    root = tmp_path_factory.mktemp("world")
    qwen = write_tiny_qwen25vl(root / "qwen", seed=0)
    flux = write_tiny_flux(root / "flux", seed=0, with_teacher=False)
    from x2i_core.plugins import load_component

    enc = load_component("encoder", "qwen2.5-vl", qwen, device="cpu")
    torch.manual_seed(0)
    AlignNet(num_layers=enc.num_layers, hidden_size=enc.hidden_size, prompt_dim=PROMPT_DIM,
             pooled_dim=POOLED_DIM, encoder="qwen2.5-vl", encoder_checkpoint=str(qwen), backbone="flux",
             backbone_checkpoint=str(flux), resolution=32).save_pretrained(root / "align")  # as `x2i align` records
    AlignNet(num_layers=enc.num_layers + 2, hidden_size=enc.hidden_size, prompt_dim=PROMPT_DIM,
             pooled_dim=POOLED_DIM, encoder="some-other-llm").save_pretrained(root / "align-other")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / name)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "broken.mp4").write_bytes(b"this is not a video")
    write_test_video(root / "clip.mp4", num_frames=6, fps=3, size=(64, 48))
    return types.SimpleNamespace(root=root, qwen=qwen, flux=flux, align=str(root / "align"),
                                 align_other=str(root / "align-other"))


def _models(w, aligner=None):
    return ["--encoder", "qwen2.5-vl", "--encoder-path", w.qwen, "--backbone", "flux", "--backbone-path", w.flux,
            "--aligner", aligner or w.align, "--device", "cpu"]


def run(args):
    return CliRunner().invoke(cli, ["generate", *args])


# -- the CLI: every kind of prompt writes a PNG with its metadata ---------------------------------
@pytest.mark.parametrize("kind", ["text", "image", "image+text", "multi-image", "video"])
def test_cli_generates(world, tmp_path, kind):
    r = world.root
    prompt = {
        "text": ["a red circle"],
        "image": ["--image", str(r / "a.png")],
        "image+text": ["--image", str(r / "a.png"), "the same, as an oil painting"],
        "multi-image": ["--image", str(r / "a.png"), "--image", str(r / "b.png"), "both on one sofa"],
        "video": ["--video", str(r / "clip.mp4"), "a poster of this clip"],
    }[kind]
    out = tmp_path / "out.png"
    result = run([*_models(world), *SIZE, "--seed", "7", "-o", str(out), *prompt])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    with Image.open(out) as image:
        assert image.size == (32, 32)
    meta = read_metadata(out)
    assert meta["seed"] == "7" and meta["steps"] == "2" and meta["guidance"] == "3.5"
    assert meta["encoder"] == f"qwen2.5-vl ({world.qwen})" and meta["backbone"] == f"flux ({world.flux})"
    assert meta["aligner"] == world.align
    if kind == "multi-image":
        assert meta["prompt"] == "<image:a.png> <image:b.png> both on one sofa"
    if kind == "video":
        assert meta["prompt"].startswith("<video:clip.mp4>")


def test_cli_several_images_and_folder_output(world, tmp_path):
    result = run([*_models(world), *SIZE, "-n", "2", "--seed", "3", "-o", str(tmp_path / "cat.png"), "a cat"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat-0.png", "cat-1.png"]
    assert [read_metadata(tmp_path / f"cat-{i}.png")["seed"] for i in range(2)] == ["3", "4"]
    folder = tmp_path / "many"
    result = run([*_models(world), *SIZE, "--seed", "4", "-o", str(folder) + "/", "a cat"])
    assert result.exit_code == 0, result.output
    # image i is seeded with seed + i: the second image above equals the first image here
    assert Image.open(folder / "x2i-4.png").tobytes() == Image.open(tmp_path / "cat-1.png").tobytes()


def test_cli_trust_remote_code_is_harmless_for_native_encoders(world, tmp_path):
    result = run([*_models(world), *SIZE, "--trust-remote-code", "-o", str(tmp_path / "x.png"), "a cat"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.png").is_file()


def _bad(world, tmp_path, extra, aligner=None):
    out = tmp_path / "never.png"
    result = run([*_models(world, aligner), *SIZE, "-o", str(out), *extra])
    assert result.exit_code == 2, result.output
    # a note that the models differ from the AlignNet's record may come first; the error is one line
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("Note: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert list(tmp_path.iterdir()) == []
    return lines[0]


def test_cli_bad_inputs(world, tmp_path):
    r = world.root
    assert "image file not found" in _bad(world, tmp_path, ["--image", str(r / "missing.png"), "x"])
    assert "cannot read image" in _bad(world, tmp_path, ["--image", str(r / "corrupt.png"), "x"])
    assert "cannot read video" in _bad(world, tmp_path, ["--video", str(r / "broken.mp4"), "x"])
    assert "audio" in _bad(world, tmp_path, ["--audio", str(r / "a.png"), "x"])
    assert "expects" in _bad(world, tmp_path, ["a cat"], aligner=world.align_other)
    assert "AlignNet folder not found" in _bad(world, tmp_path, ["a cat"], aligner=str(r / "no-such-aligner"))
    assert "multiples of 4" in _bad(world, tmp_path, ["--width", "30", "a cat"])
    assert "unknown device" in _bad(world, tmp_path, ["--device", "gpu0", "a cat"])
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in _bad(world, tmp_path, ["--device", "cuda", "a cat"])
    assert "empty" in _bad(world, tmp_path, [])


def test_cli_without_models_names_the_options(tmp_path, monkeypatch):
    from x2i_core.plugins import get_registry

    monkeypatch.setattr(get_registry(), "worlds", {})  # as if no plugin offered a default world
    result = run(["-o", str(tmp_path / "x.png"), "a cat"])
    assert result.exit_code == 2
    assert "--encoder" in result.stderr and "--backbone" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_help_explains_options():
    result = CliRunner().invoke(cli, ["generate", "--help"])
    assert result.exit_code == 0
    for word in ("--image", "--video", "--audio", "--num-images", "--offload", "Examples:"):
        assert word in result.output


# -- the Python API ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe(world):
    return X2IPipeline.from_names(encoder="qwen2.5-vl", backbone="flux", aligner=world.align,
                                  encoder_path=world.qwen, backbone_path=world.flux, device="cpu")


def test_api_generates_and_saves(pipe, tmp_path):
    phases, steps = [], []
    images = pipe("a red circle", num_images=2, steps=2, seed=5, width=32, height=32,
                  on_step=lambda i, n: steps.append(i), on_phase=phases.append)
    assert [im.size for im in images] == [(32, 32)] * 2
    assert phases == ["encode", "align", "denoise", "decode"] and steps == [1, 2]
    assert images[1].info["seed"] == "6"
    paths = save_images(images, tmp_path / "img.png")
    assert [p.name for p in paths] == ["img-0.png", "img-1.png"]
    assert read_metadata(paths[1])["prompt"] == "a red circle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img-0.png", "img-1.png"]  # no temp files left


def test_api_true_cfg_uses_the_negative_prompt(pipe):
    plain = pipe("a red circle", steps=2, seed=5, width=32, height=32)[0]
    guided = pipe("a red circle", steps=2, seed=5, width=32, height=32, true_cfg=3.0, negative_prompt="a dog")[0]
    same = pipe("a red circle", steps=2, seed=5, width=32, height=32, true_cfg=3.0, negative_prompt="a red circle")[0]
    assert guided.info["true_cfg"] == "3" and plain.info["true_cfg"] == "1"
    assert guided.tobytes() != plain.tobytes()
    diff = np.abs(np.asarray(same, dtype=int) - np.asarray(plain, dtype=int))
    assert diff.max() <= 1  # guiding away from the prompt itself changes nothing (up to rounding)
    with pytest.raises(InputError, match="true CFG"):
        pipe("a red circle", steps=1, width=32, height=32, true_cfg=0.5)


def test_offload_brings_the_encoder_in_only_to_encode(pipe, monkeypatch):
    moves = []
    monkeypatch.setattr(pipe.encoder, "to", lambda device=None, dtype=None: moves.append(str(device)) or pipe.encoder)
    monkeypatch.setattr(pipe, "encoder_device", torch.device("cuda"))  # what from_names sets with --offload on a GPU
    pipe("a red circle", steps=1, width=32, height=32)
    assert moves == ["cuda", "cpu"]


def test_api_rejects_aligner_for_other_encoder(world, pipe):
    other = AlignNet.from_pretrained(world.align_other)
    with pytest.raises(IncompatibleError, match="some-other-llm"):
        X2IPipeline(pipe.encoder, other, pipe.backbone)


def test_api_finds_registered_aligner_or_says_what_to_do(world):
    with pytest.raises(PluginError, match="x2i align"):
        X2IPipeline.from_names(encoder="qwen2.5-vl", backbone="flux", encoder_path=world.qwen,
                               backbone_path=world.flux, device="cpu")

    class TinyAligners:
        @hookimpl
        def register_aligners(self, register):
            register(AlignerSpec("tiny-align", pretrained=world.align,
                                 fits={"encoder": "qwen2.5-vl", "backbone": "flux"}))

    registry = get_registry()
    registry.add_plugin(TinyAligners(), "tiny-aligners-test")
    try:
        found = X2IPipeline.from_names(encoder="qwen2.5-vl", backbone="flux", encoder_path=world.qwen,
                                       backbone_path=world.flux, device="cpu")
        assert found.names["aligner"] == "tiny-align"
    finally:
        registry.remove_plugin("tiny-aligners-test")


# -- bad inputs: one line, exit 2, nothing written, nothing loaded ------------------------------------
@pytest.fixture
def no_loading(monkeypatch):
    """Loading any model fails the test (exit 1, not 2): what is refused must be refused before loading."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("x2i_core.generate.load_component", refuse)
    monkeypatch.setattr("x2i_core.generate.load_aligner", refuse)


@pytest.mark.parametrize("extra, match", [
    (["--guidance", "nan", "a cat"], "--guidance must be a finite number, got nan"),
    (["--true-cfg", "inf", "a cat"], "--true-cfg must be a finite number, got inf"),
    (["--width", "8192", "a cat"], "--width must be between 1 and 4096 pixels"),
    (["-n", "65", "a cat"], "--num-images must be between 1 and 64"),
    (["-n", "20", "--width", "2048", "--height", "2048", "a cat"], "80 megapixels at once"),
    (["--steps", "1001", "a cat"], "--steps must be between 1 and 1000"),
    (["--seed", str(2**64), "a cat"], "--seed must be between"),
    (["--negative-prompt", "n" * 10_001, "a cat"], "--negative-prompt has 10001 characters"),
    (["x" * 10_001], "the prompt text has 10001 characters; at most 10000"),
    (["--init-image", "{root}/a.png", "--strength", "nan", "a cat"], "--strength must be in (0, 1], got nan"),
    (["--lora", "{root}/a.png:nan", "a cat"], "a.png must be a finite number, got nan"),
])
def test_cli_refuses_numbers_and_sizes_before_loading(world, tmp_path, no_loading, extra, match):
    assert match in _bad(world, tmp_path, [arg.format(root=world.root) for arg in extra])


def test_cli_refuses_unwritable_outputs_before_loading(world, tmp_path, no_loading):
    from _writable import read_only_dir

    (tmp_path / "some.txt").write_text("a file")
    read_only = read_only_dir(tmp_path)
    before = sorted(tmp_path.iterdir())
    for output, match in ((tmp_path / "some.txt" / "out.png", "some.txt is a file"),
                          (tmp_path / "some.txt", "must be a .png file or a folder"),
                          (f"{tmp_path / 'some.txt'}/", "a file is in the way"),
                          (read_only / "out.png", f"cannot write in {read_only}"),
                          (read_only / "sub" / "out.png", f"cannot write in {read_only}")):
        result = run([*_models(world), *SIZE, "-o", str(output), "a cat"])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert match in result.stderr and "Traceback" not in result.output
    assert sorted(tmp_path.iterdir()) == before


def test_cli_refuses_what_memory_cannot_hold(world, tmp_path, monkeypatch):
    monkeypatch.setattr("x2i_core.limits.available_bytes", lambda device: 1024)
    line = _bad(world, tmp_path, ["a cat"])
    assert "2 image(s) of 32x32" not in line and "1 image(s) of 32x32 needs about" in line and "X2I_MEMORY_CHECK" in line


def test_api_refuses_the_same_inputs(pipe, monkeypatch):
    for kwargs, match in (({"guidance": float("nan")}, "finite"), ({"width": 8192}, "4096"),
                          ({"num_images": 65}, "num-images"), ({"steps": 5000}, "steps")):
        with pytest.raises(InputError, match=match):
            pipe("a cat", **{"width": 32, "height": 32, "steps": 1, **kwargs})
    with pytest.raises(InputError, match="10001 characters"):
        pipe("x" * 10_001, width=32, height=32, steps=1)
    monkeypatch.setattr("x2i_core.limits.available_bytes", lambda device: 1024)
    with pytest.raises(InputError, match="working memory"):
        pipe("a cat", width=32, height=32, steps=1)


def test_cli_aligner_alone_uses_the_models_it_records(world, tmp_path):
    import shutil

    out = tmp_path / "x.png"
    result = run(["--aligner", world.align, "--device", "cpu", *SIZE, "-o", str(out), "a cat"])
    assert result.exit_code == 0, result.output
    assert "world" not in result.stderr and "Note" not in result.stderr  # the record wins over the default world
    meta = read_metadata(out)
    assert meta["encoder"] == f"qwen2.5-vl ({world.qwen})" and meta["backbone"] == f"flux ({world.flux})"
    # an explicit option that differs from the record wins, said in one line
    other = shutil.copytree(world.qwen, tmp_path / "qwen-copy")
    result = run(["--aligner", world.align, "--encoder-path", str(other), "--device", "cpu", *SIZE,
                  "-o", str(tmp_path / "y.png"), "a cat"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (f"Note: this AlignNet was aligned with encoder qwen2.5-vl ({world.qwen}); "
                                     f"using qwen2.5-vl ({other})")
    assert read_metadata(tmp_path / "y.png")["encoder"] == f"qwen2.5-vl ({other})"
    # half a record (`x2i convert --encoder` alone) is not replaced by the default world: the missing option is named
    import json

    half = shutil.copytree(world.align, tmp_path / "half")
    config = json.loads((half / "config.json").read_text())
    (half / "config.json").write_text(json.dumps({**config, "backbone": None, "backbone_checkpoint": None}))
    result = run(["--aligner", str(half), "--device", "cpu", "-o", str(tmp_path / "z.png"), "a cat"])
    assert result.exit_code == 2 and result.stderr.strip() == (
        "Error: no backbone is named, by an option or by the AlignNet's record: pass --backbone")


def test_written_pngs_follow_the_umask(pipe, tmp_path):
    import os

    images = pipe("a red circle", steps=1, width=32, height=32, num_images=2)
    previous = os.umask(0o027)
    try:
        paths = save_images(images, tmp_path / "out" / "img.png")
    finally:
        os.umask(previous)
    assert [p.stat().st_mode & 0o777 for p in paths] == [0o640, 0o640]
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750

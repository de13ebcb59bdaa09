"""`x2i train-lora` on tiny real models: the loss falls, stop + resume gives the same LoRA as a straight run, the LoRA
loads in plain diffusers and through `x2i generate --lora`, bad data is one line before training."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from _adapter_world import write_encoder_and_aligner
from _align_tiny import one_thread
from x2i_core.lora_training import LORA_FILE, train_lora
from x2i_core.training.logs import read_csv_log
from x2i_core.training.lora_config import LoraTrainConfig

SIZE = 16
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 30)}

_threads = pytest.fixture(autouse=True)(one_thread)


def _square(path, colour, size=SIZE):
    pixels = np.full((size, size, 3), 255, dtype=np.uint8)
    pixels[4:12, 4:12] = COLOURS[colour]
    Image.fromarray(pixels).save(path)


def _edits(folder, lines=None):
    """A folder of 'make it <colour>' edits: a square in one colour -> the same square in another."""
    folder.mkdir(parents=True, exist_ok=True)
    if lines is None:
        lines = []
        for src in COLOURS:
            _square(folder / f"{src}.png", src)
        for src in COLOURS:
            for dst in COLOURS:
                if src != dst:
                    lines.append({"inputs": [f"{src}.png"], "instruction": f"make it {dst}", "target": f"{dst}.png"})
    (folder / "index.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(folder)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from x2i_plugins.backbones.flux.tiny import write_tiny_flux

    root = tmp_path_factory.mktemp("lora-world")
    qwen, aligner = write_encoder_and_aligner(root)
    flux = write_tiny_flux(root / "flux", seed=0, with_teacher=False)
    return {"encoder": qwen, "aligner": aligner, "backbone": flux, "edits": _edits(root / "edits")}


def _config(world, out, **overrides):
    settings = dict(data=world["edits"], output_dir=str(out), aligner=world["aligner"], encoder="qwen2.5-vl",
                    encoder_path=world["encoder"], backbone="flux", backbone_path=world["backbone"], steps=12,
                    batch_size=4, lr=1e-2, warmup=1, rank=4, gradient_checkpointing=False, checkpoint_every=100,
                    progress=False, device="cpu")
    settings.update(overrides)
    return LoraTrainConfig(**settings)


def _lora_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / LORA_FILE))


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-run") / "lora"
    threads = one_thread()  # module fixtures set up before the autouse one: tiny models run faster on one thread
    next(threads)
    result = train_lora(_config(world, out))
    next(threads, None)
    return out, result


def test_loss_falls_and_the_lora_is_diffusers_format(trained):
    out, result = trained
    assert not result.interrupted and result.step == 12
    losses = [float(r["loss"]) for r in read_csv_log(out / "train_log.csv")]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.95 * np.mean(losses[:4]), losses  # the noise draw keeps a floor
    tensors = _lora_tensors(out)
    assert tensors and all(k.startswith("transformer.") and ".lora_" in k for k in tensors)
    assert any(".lora_B." in k and v.abs().max() > 0 for k, v in tensors.items())  # B starts at 0: it trained
    targets = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in tensors}
    assert targets == {"to_q", "to_k", "to_v", "0"}  # to_out.0 ends in "0"
    from safetensors import safe_open

    with safe_open(str(out / LORA_FILE), "pt") as f:
        metadata = json.loads(f.metadata()["lora_adapter_metadata"])
    assert metadata["transformer.r"] == 4 and metadata["transformer.lora_alpha"] == 4  # alpha kept
    record = json.loads((out / "x2i_lora.json").read_text())
    assert record["steps"] == 12 and record["examples"] == 12


def test_plain_diffusers_loads_it(trained, world):
    from diffusers import FluxPipeline

    out, _ = trained
    pipe = FluxPipeline.from_pretrained(world["backbone"], text_encoder=None, text_encoder_2=None, tokenizer=None,
                                        tokenizer_2=None)  # the tiny folder has no teacher: the LoRA needs none
    before = pipe.transformer.transformer_blocks[0].attn.to_q.weight.detach().clone()
    pipe.load_lora_weights(str(out))
    assert pipe.transformer.peft_config["default_0"].lora_alpha == 4
    pipe.fuse_lora()
    fused = pipe.transformer.transformer_blocks[0].attn.to_q.base_layer.weight.detach()
    tensors = _lora_tensors(out)
    down = tensors["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"]
    up = tensors["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"]
    expected = before + (4 / 4) * up @ down  # alpha / rank from the metadata
    assert not torch.equal(fused, before) and torch.allclose(fused, expected, atol=1e-5)


def test_generate_uses_it(trained, world, tmp_path):
    from x2i_cli.main import cli

    out, _ = trained
    source = tmp_path / "src.png"
    _square(source, "red")
    base = ["generate", "--encoder", "qwen2.5-vl", "--encoder-path", world["encoder"], "--backbone", "flux",
            "--backbone-path", world["backbone"], "--aligner", world["aligner"], "--device", "cpu", "--steps", "2",
            "--width", str(SIZE), "--height", str(SIZE), "--seed", "1", "--image", str(source), "make it blue"]
    images = {}
    for name, extra in (("plain", []), ("lora", ["--lora", str(out)])):
        result = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / f"{name}.png"), *extra])
        assert result.exit_code == 0, result.output
        images[name] = np.asarray(Image.open(tmp_path / f"{name}.png"), dtype=int)
    assert np.abs(images["lora"] - images["plain"]).max() > 0


def test_stop_and_resume_give_the_same_lora(world, tmp_path):
    straight = train_lora(_config(world, tmp_path / "straight", steps=5, batch_size=2, checkpoint_every=2))
    stopped = train_lora(_config(world, tmp_path / "broken", steps=5, batch_size=2, checkpoint_every=2, stop_after=3))
    assert stopped.interrupted and stopped.step == 3
    # resume from the older checkpoint (as after a hard kill past it)
    older = str(tmp_path / "broken" / "checkpoints" / "step-00000002")
    resumed = train_lora(_config(world, tmp_path / "broken", steps=5, batch_size=2, checkpoint_every=2, resume=older))
    assert resumed.step == 5 and not resumed.interrupted and straight.step == 5
    a, b = _lora_tensors(tmp_path / "straight"), _lora_tensors(tmp_path / "broken")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(Exception, match="--rank 4"):
        train_lora(_config(world, tmp_path / "broken", steps=6, rank=8, resume="latest"))


def _cli_error(world, out, data, *extra):
    from x2i_cli.main import cli

    args = ["train-lora", "--data", data, "-o", str(out), "--aligner", world["aligner"], "--encoder", "qwen2.5-vl",
            "--encoder-path", world["encoder"], "--backbone", "flux", "--backbone-path", world["backbone"],
            "--device", "cpu", "--steps", "2", "--quiet", *extra]
    result = CliRunner().invoke(cli, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert not (out / "checkpoints").exists()
    return lines[0]


def test_bad_data_is_one_line_before_training(world, tmp_path, monkeypatch):
    good = [{"inputs": ["red.png"], "instruction": "make it blue", "target": "blue.png"}]

    def folder(name, lines, sizes=None):
        path = tmp_path / name
        path.mkdir()
        for colour in ("red", "blue"):
            _square(path / f"{colour}.png", colour, (sizes or {}).get(colour, SIZE))
        return _edits(path, lines)

    out = tmp_path / "out"
    assert "image file not found" in _cli_error(
        world, out, folder("missing", [{**good[0], "target": "nowhere.png"}]))
    unreadable = folder("unreadable", good)
    (tmp_path / "unreadable" / "blue.png").write_bytes(b"not a png")
    assert "cannot read the image" in _cli_error(world, out, unreadable)
    assert "no examples" in _cli_error(world, out, folder("empty", []))
    assert "one size" in _cli_error(world, out, folder("mixed", good, sizes={"blue": 24}))
    assert "multiples of" in _cli_error(world, out, folder("odd", good, sizes={"red": 18, "blue": 18}))
    assert "--lr" in _cli_error(world, out, folder("fine", good), "--lr", "nan")
    assert "--alpha" in _cli_error(world, out, folder("fine2", good), "--alpha", "inf")


def test_train_aligner_saves_the_tuned_alignnet(world, tmp_path):
    from safetensors.torch import load_file

    from x2i_core.alignnet import AlignNet

    out = tmp_path / "with-aligner"
    train_lora(_config(world, out, steps=2, batch_size=2, checkpoint_every=1, train_aligner=True))
    before, after = AlignNet.from_pretrained(world["aligner"]), AlignNet.from_pretrained(str(out / "aligner"))
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[k])]
    assert changed and (out / LORA_FILE).is_file()
    saved = load_file(str(out / "checkpoints" / "step-00000002" / "lora" / "diffusion_pytorch_model.safetensors"))
    assert any(k.startswith("aligner.") for k in saved) and any(".lora_A." in k for k in saved)
    assert not any(k.startswith("transformer.") and ".lora_" not in k for k in saved)  # frozen weights stay out

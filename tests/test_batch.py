"""`x2i generate --batch`: JSONL prompts with per-line settings, models loaded once, resume after a kill without
redoing finished images, bad lines refused before loading, and the lines split across two processes."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from x2i_cli.main import cli
from x2i_core.batch import PARTS, read_batch
from x2i_core.errors import InputError
from x2i_core.generate import read_metadata


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny Qwen2.5-VL + Flux folders and an AlignNet that records them, so --aligner alone names the models."""
    import torch

    from x2i_core.alignnet import AlignNet
    from x2i_core.plugins import load_component
    from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux
    from x2i_plugins.encoders.qwen25vl.tiny import write_tiny_qwen25vl

    root = tmp_path_factory.mktemp("batch-models")
    qwen = write_tiny_qwen25vl(root / "qwen", seed=0)
    flux = write_tiny_flux(root / "flux", seed=0, with_teacher=False)
    enc = load_component("encoder", "qwen2.5-vl", qwen, device="cpu")
    torch.manual_seed(0)
    AlignNet(num_layers=enc.num_layers, hidden_size=enc.hidden_size, prompt_dim=PROMPT_DIM, pooled_dim=POOLED_DIM,
             ).save_pretrained(root / "align")
    return ["--encoder", "qwen2.5-vl", "--encoder-path", str(qwen), "--backbone", "flux", "--backbone-path", str(flux),
            "--aligner", str(root / "align"), "--device", "cpu", "--width", "32", "--height", "32", "--steps", "2"]


def write_batch(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [{"prompt": "a red circle", "id": "red"}, {"prompt": "a small blue square", "seed": 5, "num_images": 2},
        {"messages": [{"role": "user", "content": "ein gelbes Dreieck"}], "guidance": 2.0}]


def test_batch_writes_every_line_with_its_settings_and_resumes(models, tmp_path):
    jsonl = write_batch(tmp_path / "p.jsonl", ROWS)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["generate", *models, "--batch", str(jsonl), "-o", str(out)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["00001-0.png", "00001-1.png", "00002-0.png", "red-0.png"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == 4 and [line["id"] for line in manifest["lines"]] == ["red", "00001", "00002"]
    assert read_metadata(out / "00001-1.png")["seed"] == "6" and read_metadata(out / "00002-0.png")["guidance"] == "2"

    # what a kill after the first line leaves: its manifest entry, a second entry cut mid-write, no later images
    part = out / PARTS / "part-0.jsonl"
    first = part.read_text().splitlines()[0]
    part.write_text(first + "\n" + '{"id": "000')
    for name in ("00001-0.png", "00001-1.png", "00002-0.png"):
        (out / name).unlink()
    kept = (out / "red-0.png").stat().st_mtime_ns
    again = CliRunner().invoke(cli, ["generate", *models, "--batch", str(jsonl), "-o", str(out)])
    assert again.exit_code == 0, again.output
    assert (out / "red-0.png").stat().st_mtime_ns == kept  # the finished line was not redone
    assert "made 2 line(s), skipped 1 finished" in again.output
    assert sorted(p.name for p in out.glob("*.png")) == names


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "a cat", "colour": "red"}], "unknown key(s) colour"),
    ([{"prompt": "a cat", "seed": "five"}], "'seed' must be int"),
    ([{"prompt": "a", "id": "x"}, {"prompt": "b", "id": "x"}], "used twice"),
    ([{"prompt": "a", "messages": []}], "exactly one of"),
    ([{"prompt": "a", "id": "../escape"}], "file-name-safe"),
    ([], "holds no prompts"),
])
def test_bad_lines_are_one_line_before_loading(tmp_path, rows, message):
    jsonl = write_batch(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_batch(jsonl)


def test_cli_refuses_bad_batches_before_loading(models, tmp_path):
    runner = CliRunner()
    good = write_batch(tmp_path / "p.jsonl", ROWS[:1])
    cases = [
        (["--batch", str(good)], "needs -o DIR"),
        (["--batch", str(good), "-o", str(tmp_path / "x.png")], "must be a folder"),
        (["--batch", str(good), "-o", str(tmp_path / "o"), "a cat"], "takes every prompt from its file"),
        (["--batch", str(write_batch(tmp_path / "big.jsonl", [{"prompt": "a", "width": 999999}])), "-o",
          str(tmp_path / "o")], "big.jsonl line 1"),
        (["--batch", str(write_batch(tmp_path / "m.jsonl", [{"prompt": "a <image:missing.png>"}])), "-o",
          str(tmp_path / "o")], "not found"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, ["generate", *models, *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "o").exists()


def test_lines_are_split_across_two_processes(models, tmp_path):
    rows = [{"prompt": f"a shape number {i}", "id": f"p{i}"} for i in range(4)]
    jsonl = write_batch(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "x2i_cli.main", "generate", *models, "--batch", str(jsonl), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    ranks = {line["id"]: line["rank"] for line in manifest["lines"]}
    assert ranks == {"p0": 0, "p1": 1, "p2": 0, "p3": 1}  # each line made once, by its process
    assert sorted(p.name for p in out.glob("*.png")) == [f"p{i}-0.png" for i in range(4)]
    assert sorted(p.name for p in (out / PARTS).iterdir()) == ["part-0.jsonl", "part-1.jsonl"]

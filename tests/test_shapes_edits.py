"""The shapes world's edit triples: the held-out split, the folder `x2i shapes make-edits` writes (read back by the
trainers' reader), and the evaluator's verdict on a perfect and on an unchanged edit."""
import json
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "shapes_lab"
if str(LAB) not in sys.path:  # the lab is a separate distribution, used from the checkout without installing it
    sys.path.insert(0, str(LAB))

from x2i_core.training.edit_data import read_edit_folder  # noqa: E402
from x2i_shapes_lab.commands import shapes  # noqa: E402
from x2i_shapes_lab.edits import heldout_edits, read_folder_scenes, train_edits  # noqa: E402
from x2i_shapes_lab.evaluate import score  # noqa: E402
from x2i_shapes_lab.world import HELD_OUT, render  # noqa: E402


def _pairs(scene):
    return {(s.colour, s.shape) for s in scene.shapes}


def test_training_edits_never_touch_a_held_out_pair_and_held_out_ones_always_do():
    train = train_edits(300, ("colour", "shape"))
    assert all(not (_pairs(src) | _pairs(dst)) & HELD_OUT for src, _, dst in train)
    assert {text.split()[2] if text.count(" ") == 2 else "shape" for _, text, _ in train} > {"red", "shape"}
    held = heldout_edits(30)
    assert all(_pairs(src) & HELD_OUT for src, _, _ in held)
    for src, text, dst in held + train[:30]:  # exactly the asked attribute changes
        a, b = src.shapes[0], dst.shapes[0]
        changed = {k for k in ("colour", "shape", "size", "position") if getattr(a, k) != getattr(b, k)}
        assert len(changed) == 1 and src.background == dst.background
        assert getattr(b, changed.pop()) in text


def test_make_edits_writes_a_folder_the_trainers_read(tmp_path):
    result = CliRunner().invoke(shapes, ["make-edits", "-o", str(tmp_path / "e"), "-n", "6", "--kinds", "colour,shape"])
    assert result.exit_code == 0, result.output
    examples, size = read_edit_folder(tmp_path / "e")
    assert len(examples) == 6 and size == (64, 64)
    rows = read_folder_scenes(tmp_path / "e")
    assert [r[1] for r in rows] == [e.instruction for e in examples]
    first = json.loads((tmp_path / "e" / "index.jsonl").read_text().splitlines()[0])
    assert first["inputs"] == ["images/00000-src.png"] and first["target"] == "images/00000-tgt.png"
    bad = CliRunner().invoke(shapes, ["make-edits", "-o", str(tmp_path / "x"), "--kinds", "size"])
    assert bad.exit_code != 0 and "kinds are colour, shape" in bad.output


def test_the_evaluator_accepts_the_target_and_refuses_the_unchanged_source():
    attrs = {"colour", "shape", "size", "position", "background"}
    for src, _, dst in heldout_edits(10):
        assert score(np.asarray(render(dst)), dst, attrs)["all"]
        verdict = score(np.asarray(render(src)), dst, attrs)
        assert not verdict["all"] and not verdict["colour"] and verdict["shape"]

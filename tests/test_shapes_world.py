"""The shapes world: determinism, held-out exclusion, the evaluator, the shipped models, the default world."""
import random

import numpy as np
import pytest

from x2i_plugins.worlds.shapes import ALIGNNET_DIR, MLLM_DIR, TEACHER_DIR
from x2i_plugins.worlds.shapes.evaluate import score, summarise
from x2i_plugins.worlds.shapes.world import HELD_OUT, caption, render_array, scenes

shipped = pytest.mark.skipif(
    not all((d / "config.json").is_file() or (d / "model_index.json").is_file() for d in (TEACHER_DIR, MLLM_DIR, ALIGNNET_DIR)),
    reason="shapes weights not shipped in this checkout",
)


def test_world_is_deterministic():
    a, b = scenes(3, 50), scenes(3, 50)
    assert a == b and a != scenes(4, 50)
    assert all(np.array_equal(render_array(x), render_array(y)) for x, y in zip(a, b))
    assert [caption(s, "de", random.Random(1)) for s in a] == [caption(s, "de", random.Random(1)) for s in b]


def test_training_never_sees_held_out_pairs():
    from x2i_plugins.worlds.shapes.train_mllm import make_batch

    train = scenes(0, 3000, split="train")
    assert not any(s.is_held_out() for s in train)
    texts = " | ".join(caption(s, "en", random.Random(i)) for i, s in enumerate(train))
    assert not any(f"{c} {s}" in texts for c, s in HELD_OUT)
    examples = make_batch(random.Random(0), 200)  # the MLLM's batches, edits included
    assert not any(ex.image is not None and ex.image.is_held_out() for ex in examples)
    assert not any(f"{c} {s}" in ex.answer + ex.text for ex in examples for c, s in HELD_OUT)
    held = scenes(1, 100, split="heldout")
    assert all(s.is_held_out() for s in held)


def test_evaluator_reads_ground_truth():
    for split in ("any", "heldout"):
        sc = scenes(11, 200, split=split)
        summary = summarise([score(render_array(s), s) for s in sc])
        assert summary["all"] >= 0.99, summary


@shipped
def test_shipped_folders_load_through_the_plugins():
    import torch

    from x2i_core.generate import load_aligner
    from x2i_core.plugins import load_component

    backbone = load_component("backbone", "shapes", device="cpu", dtype=torch.float32)
    encoder = load_component("encoder", "shapes-mllm", device="cpu", dtype=torch.float32)
    aligner = load_aligner("shapes", device="cpu", dtype=torch.float32)
    aligner.check_fits(encoder, backbone)
    cond = backbone.load_teacher().encode_text(["a red circle"])
    assert cond.prompt_embeds.shape[-1] == backbone.prompt_embed_dim
    from diffusers import FluxPipeline

    assert FluxPipeline.from_pretrained(str(TEACHER_DIR)).transformer is not None  # plain diffusers loads it too


@shipped
def test_generate_uses_the_shapes_world_by_default(tmp_path):
    from click.testing import CliRunner

    from x2i_cli.main import _add_plugin_commands, cli

    _add_plugin_commands()
    out = tmp_path / "x.png"
    result = CliRunner().invoke(cli, ["generate", "a red circle", "--steps", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "shapes world" in result.output
    from PIL import Image

    assert Image.open(out).size == (64, 64)

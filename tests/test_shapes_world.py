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


def test_token_alignment_pulls_other_views_onto_english_tokens():
    import torch

    from x2i_plugins.worlds.shapes.mllm_tasks import Example
    from x2i_plugins.worlds.shapes.train_mllm import token_alignment

    views = [Example(None, "a", "t", "x", 0, "en"), Example(None, "b", "t", "x", 0, "de"),
             Example(None, "", "t", "x", 0, "image"), Example(None, "c", "t", "x", 1, "de")]  # group 1: no English
    first_turn = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    english = torch.randn(1, 4, 8)
    # German = two of the English token states (a sub-set), image = all of them reordered plus a duplicate
    same = torch.cat([english, english[:, [1, 0, 3, 3]], english[:, [2, 0, 1, 1]], torch.randn(1, 4, 8)])
    # every English token must have a counterpart: German lacks English token 2 -> positive, image covers all -> 0
    image_only = token_alignment((same[[0, 2]],), first_turn[[0, 2]], [views[0], views[2]])
    assert image_only.item() == pytest.approx(0.0, abs=1e-5)
    assert token_alignment((same[:2],), first_turn[:2], views[:2]).item() > 0.01
    # the English side is the anchor: gradients reach only the other views
    states = same.clone().requires_grad_(True)
    token_alignment((states * 1.0,), first_turn, views).backward()
    assert states.grad[0].abs().sum() == 0 and states.grad[1].abs().sum() > 0 and states.grad[3].abs().sum() == 0


def test_image_transport_matches_token_sets_one_to_one():
    import torch

    from x2i_plugins.worlds.shapes.mllm_tasks import Example
    from x2i_plugins.worlds.shapes.train_mllm import image_transport, token_alignment, transport_plan, uniform_log_mass

    torch.manual_seed(0)
    cost = torch.rand(3, 5, 4) * 3
    mask_a, mask_b = torch.ones(3, 5, dtype=torch.bool), torch.ones(3, 4, dtype=torch.bool)
    mask_a[1, 4] = False  # a padded row: no mass
    plan = transport_plan(cost, uniform_log_mass(mask_a), uniform_log_mass(mask_b))
    assert torch.allclose(plan[[0, 2]].sum(-1), torch.full((2, 5), 0.2), atol=2e-3)
    assert torch.allclose(plan[1].sum(-1), torch.tensor([0.25] * 4 + [0.0]), atol=2e-3)
    assert torch.allclose(plan.sum(-2), torch.full((3, 4), 0.25), atol=2e-3)
    english = torch.randn(1, 4, 8) * 3
    first_turn = torch.ones(2, 4, dtype=torch.bool)
    views = [Example(None, "a", "t", "x", 0, "en"), Example(None, "", "t", "x", 0, "image")]
    permuted = torch.cat([english, english[:, [2, 0, 3, 1]]])
    collapsed = torch.cat([english, english[:, [0, 0, 0, 1]]])  # most image tokens on one English token
    target = {1: english[0][None]}  # (layers=1, tokens, hidden)
    assert image_transport((permuted,), first_turn, views, target).item() < 0.01
    assert image_transport((collapsed,), first_turn, views, target).item() > 0.1
    # the failure the term exists for: every English token covered, one of them twice (an extra "a") ->
    # Chamfer is zero, transport is not
    states = torch.cat([torch.cat([english, english[:, :1]], 1), english[:, [0, 0, 1, 2, 3]]])
    turn5 = torch.ones(2, 5, dtype=torch.bool)
    turn5[0, 4] = False  # English has 4 real tokens; the image 5, two of them on English token 0
    assert token_alignment((states,), turn5, views).item() < 1e-5
    assert image_transport((states,), turn5, views, {1: english[0][None]}).item() > 0.05
    # gradients reach the image states only
    x = states.clone().requires_grad_(True)
    image_transport((x * 1.0,), turn5, views, {1: english[0][None]}).backward()
    assert x.grad[0].abs().sum() == 0 and x.grad[1].abs().sum() > 0


def test_train_mllm_continues_a_saved_model(tmp_path):
    import json

    from x2i_plugins.worlds.shapes.train_mllm import train

    train(str(tmp_path / "a"), steps=2, n_scenes=2, log=lambda *_: None)
    stats = train(str(tmp_path / "b"), steps=2, n_scenes=2, token_weight=1.0, init=str(tmp_path / "a"),
                  log=lambda *_: None)
    assert stats["final_token"] > 0 and stats["continued_from"]["steps"] == 2
    assert json.loads((tmp_path / "b" / "train_stats.json").read_text())["token_weight"] == 1.0


def test_probe_command_reports_retrieval_and_image_token_words():
    import json

    from click.testing import CliRunner

    from x2i_cli.main import cli

    result = CliRunner().invoke(cli, ["shapes", "probe", "-n", "4"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    words = out["image_token_words"]
    assert words["n"] == 2 and 0.0 <= words["content_word_share"] <= 1.0
    assert set(words) >= {f"{a}_word_reached" for a in ("colour", "shape", "size", "position", "background")}
    assert 0.0 <= out["retrieval"]["image->en"]["last"] <= 1.0

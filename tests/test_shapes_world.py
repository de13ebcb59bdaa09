"""The shapes world: determinism, held-out exclusion, the evaluator, the shipped models, the default world, and
the split between the installed world (presets + weights) and its lab (shapes_lab/, imported from the checkout)."""
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "shapes_lab"
if str(LAB) not in sys.path:  # the lab is a separate distribution, used from the checkout without installing it
    sys.path.insert(0, str(LAB))

from x2i_plugins.worlds.shapes import ALIGNNET_DIR, MLLM_DIR, TEACHER_DIR, WEIGHTS  # noqa: E402
from x2i_shapes_lab import ABLATIONS_DIR, LOGS_DIR  # noqa: E402
from x2i_shapes_lab.commands import shapes  # noqa: E402
from x2i_shapes_lab.evaluate import score, summarise  # noqa: E402
from x2i_shapes_lab.world import HELD_OUT, caption, render_array, scenes  # noqa: E402

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
    from x2i_shapes_lab.train_mllm import make_batch

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
        assert summary["all"] >= 0.99 and summary["objects"] == 1.0, summary
    from x2i_shapes_lab.world import Scene, Shape

    two = Scene("white", (Shape("circle", "red", "large", "top left"), Shape("square", "blue", "small", "bottom right")))
    wrong_count = score(render_array(two), Scene("white", two.shapes[:1]))
    assert not wrong_count["objects"] and not wrong_count["all"] and wrong_count["background"]


@shipped
def test_shipped_folders_load_through_the_plugins():
    import torch

    from x2i_core import load_aligner, load_component

    backbone = load_component("backbone", "shapes", device="cpu", dtype=torch.float32)
    encoder = load_component("encoder", "shapes-mllm", device="cpu", dtype=torch.float32)
    aligner = load_aligner("shapes", device="cpu", dtype=torch.float32)
    aligner.check_fits(encoder, backbone)
    cond = backbone.load_teacher().encode_text(["a red circle"])
    assert cond.prompt_embeds.shape[-1] == backbone.prompt_embed_dim
    from diffusers import FluxPipeline

    assert FluxPipeline.from_pretrained(str(TEACHER_DIR)).transformer is not None  # plain diffusers loads it too


def run_x2i(args, cwd, env_extra=None):
    """`x2i ARGS` through x2i_cli.main in a fresh process (the registry is built once per process)."""
    code = "import sys; from x2i_cli.main import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd)


@shipped
def test_generate_uses_the_shapes_world_by_default(tmp_path):
    # X2I_PLUGINS=x2i: only the x2i distribution's plugins, as on a fresh clone without the lab installed
    result = run_x2i(["generate", "a red circle", "--steps", "2", "-o", "x.png"], tmp_path, {"X2I_PLUGINS": "x2i"})
    assert result.returncode == 0, result.stderr
    assert "Using the built-in shapes world" in result.stdout + result.stderr
    from PIL import Image

    assert Image.open(tmp_path / "x.png").size == (64, 64)
    commands = run_x2i(["--help"], tmp_path, {"X2I_PLUGINS": "x2i"}).stdout.split("Commands:")[1]
    assert "generate" in commands and not any(line.split()[:1] == ["shapes"] for line in commands.splitlines())


def test_installed_world_holds_presets_and_weights_only():
    folder = WEIGHTS.parent
    assert sorted(p.name for p in folder.rglob("*.py")) == ["__init__.py"]
    assert {p.name for p in WEIGHTS.iterdir()} == {"teacher", "mllm", "alignnet", "lightcontrol"}
    assert not any(p.name in ("ablations", "train_log.csv") for p in folder.rglob("*"))
    # what left the package is in the lab's folders
    assert len(list(ABLATIONS_DIR.glob("*/config.json"))) == 7 == len(list((LOGS_DIR / "ablations").glob("*/train_log.csv")))
    assert (LOGS_DIR / "alignnet" / "train_log.csv").is_file()


def test_lab_runs_as_a_module_and_as_an_installed_x2i_plugin(tmp_path):
    help_ = subprocess.run([sys.executable, "-m", "x2i_shapes_lab", "--help"], capture_output=True, text=True, cwd=LAB)
    assert help_.returncode == 0 and "train-teacher" in help_.stdout, help_.stderr
    # a private install of a copy (the build writes beside its sources), so checkout and environment stay as they were
    source, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(LAB, source, ignore=shutil.ignore_patterns("weights", "logs", "__pycache__", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")])),
           "X2I_PLUGINS": "x2i,x2i-shapes-lab"}  # the suite's conftest allows the built-ins only
    result = run_x2i(["shapes", "eval", "--model", "truth", "--set", "heldout", "-n", "3"], tmp_path, env)
    assert result.returncode == 0 and "all=100.0%" in result.stdout, result.stdout + result.stderr
    listed = {p["name"]: p for p in json.loads(run_x2i(["plugins", "--json"], tmp_path, env).stdout)}
    assert listed["shapes_lab"]["distribution"] == "x2i-shapes-lab" and listed["shapes_lab"]["status"] == "loaded"


def test_token_alignment_pulls_other_views_onto_english_tokens():
    import torch

    from x2i_shapes_lab.mllm_tasks import Example
    from x2i_shapes_lab.train_mllm import token_alignment

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

    from x2i_shapes_lab.mllm_tasks import Example
    from x2i_shapes_lab.train_mllm import image_transport, token_alignment, transport_plan, uniform_log_mass

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
    assert image_transport((permuted,), first_turn, target).item() < 0.01
    assert image_transport((collapsed,), first_turn, target).item() > 0.1
    # the failure the term exists for: every English token covered, one of them twice (an extra "a") ->
    # Chamfer is zero, transport is not
    states = torch.cat([torch.cat([english, english[:, :1]], 1), english[:, [0, 0, 1, 2, 3]]])
    turn5 = torch.ones(2, 5, dtype=torch.bool)
    turn5[0, 4] = False  # English has 4 real tokens; the image 5, two of them on English token 0
    assert token_alignment((states,), turn5, views).item() < 1e-5
    assert image_transport((states,), turn5, {1: english[0][None]}).item() > 0.05
    # gradients reach the image states only
    x = states.clone().requires_grad_(True)
    image_transport((x * 1.0,), turn5, {1: english[0][None]}).backward()
    assert x.grad[0].abs().sum() == 0 and x.grad[1].abs().sum() > 0


def test_object_assignment_gives_each_cell_a_caption_word_from_the_scene():
    from x2i_shapes_lab.object_targets import caption_word_roles, cell_coverage, object_assignment
    from x2i_shapes_lab.world import Scene, Shape

    one = Scene("white", (Shape("circle", "red", "large", "top left"),))
    coverage = cell_coverage(one)
    assert coverage.shape == (1, 16) and coverage[0, 0] > 0.3 and coverage[0, 15] == 0  # raster order
    words = caption(one, "en", full=True).split()
    image = ["<|im_start|>", "user", "<|vision_start|>"] + ["<|image_pad|>"] * 16 + ["<|vision_end|>", "<|im_end|>"]
    text = ["<|im_start|>", "user"] + words + ["<|im_end|>"]
    index = object_assignment(one, image, text)
    assert len(index) == len(image) and index[:2] == [0, 1] and index[-1] == len(text) - 1
    assert text[index[2]] == "a" and text[index[19]] == "background"
    cells = [text[j] for j in index[3:19]]
    own = [c for c in range(16) if coverage[0, c] > 0]
    assert [cells[c] for c in own[:4]] == ["circle", "red", "large", "top"]  # the object's cells, raster order
    assert set(cells) == set(words)  # every caption word has an image token
    assert {cells[c] for c in range(16) if coverage[0, c] == 0} >= {"white", "background"}
    # cell order "last": the object's last cell (raster order) stands for the shape, the one before it the colour
    last = [text[j] for j in object_assignment(one, image, text, "last")[3:19]]
    assert [last[c] for c in own[::-1][:4]] == ["circle", "red", "large", "top"] and set(last) == set(words)
    # words once: no object word on two cells; the cells left over take the background's words
    once = [text[j] for j in object_assignment(one, image, text, "last", words_once=True)[3:19]]
    assert set(once) == set(words) and all(once.count(w) == 1 for w in ("circle", "red", "large", "top", "left"))
    assert once.count("a") == words.count("a") and once.count("white") + once.count("background") > 2
    with pytest.raises(ValueError, match="cell_order"):
        object_assignment(one, image, text, "middle")
    two = Scene("black", (Shape("square", "blue", "small", "top right"), Shape("triangle", "green", "large", "bottom left")))
    roles = caption_word_roles(caption(two, "en", full=True).split(), 2)
    assert ("shape", 0) in roles and ("shape", 1) in roles and roles[-2:] == [("background", -1)] * 2
    with pytest.raises(ValueError, match="2"):
        caption_word_roles(words, 2)
    with pytest.raises(ValueError, match="chat template"):
        object_assignment(one, image, ["<|im_start|>", "assistant"] + words + ["<|im_end|>"])
    with pytest.raises(ValueError, match="16 image tokens"):
        object_assignment(one, image[:5] + image[7:], text)


def test_object_regression_is_zero_on_target_and_trains_the_image_side():
    import torch

    from x2i_shapes_lab.object_targets import object_regression

    torch.manual_seed(0)
    caption_states = torch.randn(2, 4, 8)  # (layers, tokens, hidden)
    index = [0, 1, 1, 2, 3]
    first_turn = torch.ones(1, 5, dtype=torch.bool)
    on_target = [caption_states[l, index][None] for l in range(2)]
    assert object_regression(on_target, first_turn, {0: index}, {0: caption_states}).item() < 1e-6
    shuffled = [caption_states[l, [3, 2, 1, 1, 0]][None].requires_grad_(True) for l in range(2)]
    loss = object_regression(shuffled, first_turn, {0: index}, {0: caption_states})
    loss.backward()
    assert loss.item() > 0.1 and all(s.grad.abs().sum() > 0 for s in shuffled)


def test_to_fp16_halves_float32_weights_in_place(tmp_path):
    import torch
    from click.testing import CliRunner
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model" / "sub"
    folder.mkdir(parents=True)
    weight = torch.randn(4, 3)
    save_file({"w": weight, "steps": torch.arange(3)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"dtype": "float32", "vision_config": {"dtype": "float32"}}))
    result = CliRunner().invoke(shapes, ["to-fp16", str(tmp_path / "model")])
    assert result.exit_code == 0 and "model.safetensors" in result.output, result.output
    loaded = load_file(folder / "model.safetensors")
    assert loaded["w"].dtype == torch.float16 and loaded["steps"].dtype == torch.int64
    assert torch.equal(loaded["w"], weight.half())
    assert json.loads((folder / "config.json").read_text()) == {"dtype": "float16", "vision_config": {"dtype": "float16"}}
    again = CliRunner().invoke(shapes, ["to-fp16", str(tmp_path / "model")])
    assert again.exit_code == 0 and again.output == ""  # nothing left to halve
    assert CliRunner().invoke(shapes, ["to-fp16", str(tmp_path / "missing")]).exit_code != 0


@shipped
def test_shipped_weights_are_fp16():
    from safetensors import safe_open

    files = list(WEIGHTS.rglob("*.safetensors")) + list(ABLATIONS_DIR.rglob("*.safetensors"))
    assert len(files) == 14  # teacher 4, MLLM 1, AlignNet 1, LightControl 1, ablations 7
    for path in files:
        with safe_open(str(path), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} <= {"F16", "I64"}, path


def test_train_mllm_continues_a_saved_model(tmp_path):
    from x2i_shapes_lab.train_mllm import train

    train(str(tmp_path / "a"), steps=2, n_scenes=2, log=lambda *_: None)
    stats = train(str(tmp_path / "b"), steps=2, n_scenes=2, token_weight=1.0, init=str(tmp_path / "a"),
                  object_weight=1.0, object_cells="last", vision_shape_weight=1.0, log=lambda *_: None)
    assert stats["final_token"] > 0 and stats["final_object"] > 0 and stats["continued_from"]["steps"] == 2
    assert stats["object_cells"] == "last" and stats["final_vision_shape"] > 0
    assert json.loads((tmp_path / "b" / "train_stats.json").read_text())["token_weight"] == 1.0


def test_probe_command_reports_retrieval_and_image_token_words():
    from click.testing import CliRunner

    result = CliRunner().invoke(shapes, ["probe", "-n", "4"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    words = out["image_token_words"]
    assert words["n"] == 2 and 0.0 <= words["content_word_share"] <= 1.0
    assert set(words) >= {f"{a}_word_reached" for a in ("colour", "shape", "size", "position", "background")}
    assert 0.0 <= out["retrieval"]["image->en"]["last"] <= 1.0
    readout = out["shape_readout"]
    assert len(readout["seen"]) == len(readout["heldout"]) >= 2 and all(0.0 <= v <= 1.0 for v in readout["heldout"])


def test_eval_sets_image_seen_takes_the_seen_scenes_and_unknown_sets_are_refused():
    from click.testing import CliRunner

    from x2i_shapes_lab.benchmark import prompts_and_targets

    prompts, targets, _ = prompts_and_targets("image-seen", 6)
    _, seen_targets, _ = prompts_and_targets("seen", 6)
    assert targets == seen_targets and not any(s.is_held_out() for s in targets)  # training pairs, as `seen`
    assert all(np.array_equal(np.asarray(p.images[0]), render_array(s)) for p, s in zip(prompts, targets))
    result = CliRunner().invoke(shapes, ["eval", "--model", "truth", "--set", "image-seen", "-n", "5"])
    assert result.exit_code == 0 and "image-seen" in result.output and "all=100.0%" in result.output, result.output
    result = CliRunner().invoke(shapes, ["eval", "--model", "truth", "--set", "imagee", "-n", "5"])
    assert result.exit_code == 2 and "imagee: the sets are" in result.output


def test_vision_shape_term_draws_no_palette_colour_and_trains_the_vision_tower():
    import math

    import numpy as np
    import torch

    from x2i_shapes_lab.train_mllm import build_image_processor, build_model, build_tokenizer, wrap
    from x2i_shapes_lab.vision_shapes import MIN_COLOUR_DISTANCE, off_palette_scene, vision_shape_loss
    from x2i_shapes_lab.world import BACKGROUNDS, COLOURS

    rng = random.Random(0)
    named = list(COLOURS.values()) + list(BACKGROUNDS.values())
    for _ in range(20):
        img, kinds = off_palette_scene(rng)
        assert 1 <= len(kinds) <= 2
        pixels = {tuple(p) for p in np.asarray(img).reshape(-1, 3)} - set(BACKGROUNDS.values())
        assert pixels and all(min(math.dist(p, c) for c in named) >= MIN_COLOUR_DISTANCE for p in pixels)
    torch.manual_seed(0)
    tok = build_tokenizer()
    model = build_model(tok)
    enc = wrap(model, tok, build_image_processor())
    head = torch.nn.Linear(model.config.vision_config.out_hidden_size, 3)
    loss = vision_shape_loss(model, enc, head, random.Random(1), 3)
    loss.backward()
    assert loss.item() > 0 and model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.model.language_model.layers[0].mlp.up_proj.weight.grad is None  # the vision tower only


def test_shape_readout_finds_shape_only_where_the_states_carry_it():
    from types import SimpleNamespace

    import numpy as np
    import torch

    from x2i_shapes_lab.evaluate import find_shapes
    from x2i_shapes_lab.probe import shape_readout
    from x2i_shapes_lab.world import COLOURS, SHAPES

    class Fake:
        """States that hold one attribute of the drawn object, one-hot (read back from the pixels)."""

        def __init__(self, attribute, names):
            self.attribute, self.names = attribute, list(names)

        def encode(self, prompts):
            rows = []
            for p in prompts:
                found = find_shapes(np.asarray(p.parts[0].value))[1][0]
                rows.append(torch.nn.functional.one_hot(torch.tensor(self.names.index(getattr(found, self.attribute))),
                                                        len(self.names)).float())
            states = torch.stack(rows)[:, None, None, :]  # (N, layers 1, tokens 1, hidden)
            return SimpleNamespace(hidden_states=states + 0.01 * torch.randn_like(states),
                                   attention_mask=torch.ones(len(prompts), 1))

    shape = shape_readout(Fake("shape", SHAPES), n_fit=60, n_test=30, steps=100)
    assert shape["heldout"][0] >= 0.9 and shape["seen"][0] >= 0.9
    colour = shape_readout(Fake("colour", COLOURS), n_fit=60, n_test=30, steps=100)
    assert colour["heldout"][0] <= 0.6  # colour alone says nothing of shape in the fit scenes


def test_answer_reader_scores_what_a_description_names():
    from x2i_shapes_lab.reason import read_answer, score_answer

    scene = scenes(31, 1, split="train", two_prob=0.0)[0]
    shape = scene.shapes[0]
    assert score_answer(caption(scene, "en", full=True), scene) == {"colour": True, "shape": True,
                                                                     "colour_shape": True, "exact": True}
    other = next(s for s in ("circle", "square", "triangle") if s != shape.shape)
    wrong = score_answer(f"a {shape.colour} {other}", scene)
    assert wrong["colour"] and not wrong["shape"] and not wrong["colour_shape"] and not wrong["exact"]
    assert read_answer("nothing here") == {"colour": None, "shape": None}


@shipped
def test_reason_mode_draws_from_the_mllm_answer_as_x2i_generate_reason_does():
    import torch
    from click.testing import CliRunner

    from x2i_core import X2IPipeline
    from x2i_shapes_lab.benchmark import generate_batched, load_world, prompts_and_targets
    from x2i_shapes_lab.reason import ReasonStudent, asking, run_reason_set

    backbone, encoder, aligner = load_world()
    summary, said, answers, images, _ = run_reason_set(backbone, encoder, aligner, "image", 2, steps=2)
    assert len(answers) == len(images) == 2 and all(answers)
    assert {"colour", "shape", "all", "colour_shape"} <= set(summary) and set(said) == {"colour", "shape", "colour_shape", "exact"}
    assert all(0.0 <= v <= 1.0 for v in (*summary.values(), *said.values()))
    # the lab's student is the computation of X2IPipeline(reason=True) on the same dialogue: the same pixels
    prompt = prompts_and_targets("image", 1)[0][0]
    student = ReasonStudent(encoder, aligner, max_new_tokens=40)
    ours = generate_batched(backbone, student, [prompt], steps=2, seed=5)[0]
    theirs = X2IPipeline(encoder, aligner, backbone)(asking(prompt), steps=2, seed=5, reason=True, reason_tokens=40)[0]
    assert theirs.info["answer"] == student.answers[0]
    assert np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(theirs, dtype=np.int16)).max() <= 1
    result = CliRunner().invoke(shapes, ["eval", "--set", "image-seen", "-n", "2", "--steps", "2", "--reason"])
    assert result.exit_code == 0 and "reason  image-seen n=2" in result.output and "answer  image-seen" in result.output, result.output
    result = CliRunner().invoke(shapes, ["eval", "--model", "teacher", "--reason", "-n", "2"])
    assert result.exit_code == 2 and "needs --model student" in result.output

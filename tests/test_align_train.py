"""Training end to end on tiny real folders: the loss falls, samples move toward the teacher, resume is exact."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from _align_tiny import one_thread, tiny_config, tiny_world
from x2i_core.align.logs import read_csv_log
from x2i_core.align.trainer import run_alignment
from x2i_core.errors import InputError


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.getbasetemp() / "align-tiny")


def _rows(path, drop=("seconds",)):
    return [{k: v for k, v in r.items() if k not in drop} for r in read_csv_log(path)]


def test_loss_halves_and_samples_move_toward_the_teacher(world, tmp_path):
    from x2i_core.align.components import build_alignnet, load_backbone, load_encoder, load_teacher
    from x2i_core.align.evaluate import EvalConfig, evaluate_alignnet
    from x2i_core.alignnet import AlignNet

    cfg = tiny_config(world, tmp_path / "out", steps=40, warmup=3)
    encoder, backbone = load_encoder(cfg, "cpu"), load_backbone(cfg, "cpu")
    teacher = load_teacher(cfg, backbone)
    torch.manual_seed(0)
    build_alignnet(cfg, encoder, backbone).save_pretrained(str(tmp_path / "init"))
    cfg.init = str(tmp_path / "init")
    result = run_alignment(cfg)
    losses = [float(r["loss"]) for r in read_csv_log(tmp_path / "out" / "train_log.csv")]
    assert len(losses) == 40 and not result.interrupted
    first, last = sum(losses[:3]) / 3, sum(losses[-5:]) / 5
    print(f"loss: first 3 steps {first:.4f}, last 5 steps {last:.4f} (ratio {last / first:.2f})")
    assert last <= 0.5 * first

    trained = AlignNet.from_pretrained(str(tmp_path / "out")).eval()
    # the registered names the folders resolve to, the folders as absolute paths, and the training resolution
    from x2i_core.plugins import get_registry

    assert trained.config.encoder == get_registry().resolve("encoder", world["encoder"])[0].name
    assert trained.config.backbone == "flux" and trained.config.resolution == 16
    assert trained.config.encoder_checkpoint == str(Path(world["encoder"]).resolve())
    assert trained.config.backbone_checkpoint == str(Path(world["backbone"]).resolve())
    fresh = AlignNet.from_pretrained(str(tmp_path / "init")).eval()
    ev = EvalConfig(data=[world["prompts"]], num_prompts=4, resolution=16, steps=3, teacher_max_length=24, device="cpu")
    before = evaluate_alignnet(ev, encoder=encoder, backbone=backbone, teacher=teacher, alignnet=fresh)
    after = evaluate_alignnet(ev, encoder=encoder, backbone=backbone, teacher=teacher, alignnet=trained)
    print(f"final latent MSE {before.latent_mse:.6g} -> {after.latent_mse:.6g}; "
          f"pixel MSE {before.pixel_mse:.6g} -> {after.pixel_mse:.6g}; loss {before.loss:.4f} -> {after.loss:.4f}")
    assert after.latent_mse < before.latent_mse
    assert after.loss < 0.6 * before.loss


def test_one_transformer_serves_both_passes_and_only_the_alignnet_learns(world, tmp_path):
    from x2i_core.align.components import build_alignnet, load_backbone, load_encoder, load_teacher
    from x2i_core.align.trainer import distill_step

    cfg = tiny_config(world, tmp_path / "o")
    encoder, backbone = load_encoder(cfg, "cpu"), load_backbone(cfg, "cpu")
    teacher = load_teacher(cfg, backbone)
    alignnet = build_alignnet(cfg, encoder, backbone)
    grad_enabled = []
    hook = backbone.transformer.register_forward_pre_hook(lambda module, args: grad_enabled.append(torch.is_grad_enabled()))
    try:
        result = distill_step(["a red circle", "ein Hund im Schnee"], encoder=encoder, alignnet=alignnet,
                              backbone=backbone, teacher=teacher, cfg=cfg, step=0, guidance=3.5)
    finally:
        hook.remove()
    assert grad_enabled == [False, True]  # the same module: teacher pass without grad, then the student pass
    result.total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in alignnet.parameters())
    frozen = [*backbone.transformer.parameters(), *encoder.model.parameters(), *teacher.t5.parameters(),
              *teacher.clip.parameters()]
    assert all(p.grad is None for p in frozen)


def test_resume_follows_the_uninterrupted_run(world, tmp_path):
    steps = 8
    run_alignment(tiny_config(world, tmp_path / "straight", steps=steps, checkpoint_every=3))
    stopped = run_alignment(tiny_config(world, tmp_path / "broken", steps=steps, checkpoint_every=3, stop_after=4))
    assert stopped.interrupted and stopped.step == 4 and stopped.checkpoint.name == "step-00000004"
    assert not (tmp_path / "broken" / "config.json").exists()  # no final AlignNet yet
    assert len(read_csv_log(tmp_path / "broken" / "train_log.csv")) == 4
    # Resume from the older checkpoint (as after a hard kill past it): CSV rows after step 3 are dropped.
    older = str(tmp_path / "broken" / "checkpoints" / "step-00000003")
    run_alignment(tiny_config(world, tmp_path / "broken", steps=steps, checkpoint_every=3, resume=older))
    straight, resumed = _rows(tmp_path / "straight" / "train_log.csv"), _rows(tmp_path / "broken" / "train_log.csv")
    assert len(resumed) == steps
    for a, b in zip(straight, resumed):
        for key in a:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-6, abs=1e-9), (a["step"], key)
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "straight" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(tmp_path / "broken" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-7) for k in wa)


def test_resume_refuses_another_run_and_records_what_it_warns_of(world, tmp_path, capsys):
    """docs/align.md: architecture, encoder/backbone, loss, temperature and term weights refuse; data files and the
    other settings warn and are recorded in x2i_align.json; a corrupt checkpoint is one CheckpointError line."""
    import json
    import pickle
    import shutil

    from x2i_core.errors import CheckpointError

    out = tmp_path / "o"
    resume = dict(steps=4, checkpoint_every=2, resume="latest")
    previous = os.umask(0o022)
    try:
        run_alignment(tiny_config(world, out, steps=4, checkpoint_every=2, stop_after=2))
    finally:
        os.umask(previous)
    for options, match in (
        ({"context_layers": 1}, "cannot resume.*--context-layers 0.*given: --context-layers 1"),
        ({"loss": "mse"}, "cannot resume: the checkpoint was trained with --loss rkl, this run asks for --loss mse"),
        ({"temperature": 2.0}, "--temperature 3.0, this run asks for --temperature 2.0"),
        ({"image_side_only": True}, "--term-weights double_image=1,double_text=1.*double_text=0"),
        ({"encoder": "qwen2.5-vl", "encoder_path": "Qwen/Qwen2.5-VL-3B-Instruct"},
         "aligned with encoder .*, this run uses qwen2.5-vl \\(Qwen/Qwen2.5-VL-3B-Instruct\\)"),
    ):
        with pytest.raises(InputError, match=match):
            run_alignment(tiny_config(world, out, **resume, **options))

    checkpoint = out / "checkpoints" / "step-00000002"
    bad = tmp_path / "bad-checkpoint"
    for name, damage, match in (
        ("state.json", b"{}", "state.json: unreadable or incomplete"),
        ("optimizer.pt", b"not a torch file", "optimizer.pt cannot be read as tensors only"),
        ("optimizer.pt", pickle.dumps({"state": print}, protocol=2), "optimizer.pt holds pickled Python objects, "
                                                                     "not only tensors \\(GLOBAL print\\)"),
        ("scheduler.pt", b"", "scheduler.pt is not a readable checkpoint"),
        ("alignnet/diffusion_pytorch_model.safetensors", b"\x00" * 16, "safetensors: unreadable"),
    ):
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(checkpoint, bad)
        (bad / name).write_bytes(damage)
        with pytest.raises(CheckpointError, match=match) as caught:
            run_alignment(tiny_config(world, out, **{**resume, "resume": str(bad)}))
        assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value)
    # the same path, another model (the identity recorded with the checkpoint): refused once the models load
    shutil.rmtree(bad)
    shutil.copytree(checkpoint, bad)
    state = json.loads((bad / "state.json").read_text())
    state.pop("models")
    (bad / "state.json").write_text(json.dumps({**state, "encoder_identity": "qwen2.5-vl(another)"}))
    with pytest.raises(InputError, match="aligned with encoder qwen2.5-vl\\(another\\), this run loaded"):
        run_alignment(tiny_config(world, out, **{**resume, "resume": str(bad)}))
    assert not (out / "config.json").exists()
    capsys.readouterr()

    # other data files and another learning rate: a warning, and the record keeps it
    moved = shutil.copy(world["prompts"], tmp_path / "moved-prompts.txt")
    previous = os.umask(0o022)
    try:
        run_alignment(tiny_config(world, out, **resume, data=[str(moved)], lr=2e-3))
    finally:
        os.umask(previous)
    warning = capsys.readouterr().out
    assert "Warning: resuming with changed settings (--data: other prompt files" in warning
    assert "--lr 0.001 -> 0.002" in warning and "x2i_align.json" in warning
    record = json.loads((out / "x2i_align.json").read_text())
    [resumed] = record["resumes"]
    assert resumed["step"] == 2 and resumed["checkpoint"].endswith("step-00000002")
    assert resumed["warnings"][0].startswith("--data") and "--lr 0.001 -> 0.002" in resumed["warnings"]
    # the AlignNet and its checkpoints follow the umask (safetensors alone would write 0600)
    for weights in (out / "diffusion_pytorch_model.safetensors", *out.glob("checkpoints/*/alignnet/*.safetensors")):
        assert weights.stat().st_mode & 0o777 == 0o644, weights


@pytest.fixture
def no_model_loading(monkeypatch):
    """Loading a model fails the test (exit 1, not 2): what is refused must be refused before loading."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for target in ("trainer.load_encoder", "trainer.load_backbone", "evaluate.load_encoder", "evaluate.load_backbone",
                   "teacher_build.load_backbone"):
        monkeypatch.setattr(f"x2i_core.align.{target}", refuse)


def test_align_and_eval_refuse_bad_inputs_before_loading(world, tmp_path, no_model_loading):
    from _writable import read_only_dir
    from x2i_cli.main import cli

    (tmp_path / "some.txt").write_text("a file")
    blocked, read_only, ok = tmp_path / "some.txt", read_only_dir(tmp_path), str(tmp_path / "ok")
    align = ["align", "--encoder", world["encoder"], "--backbone", world["backbone"], "--data", world["prompts"],
             "--device", "cpu", "--quiet"]
    evaluate = ["eval-align", "--aligner", str(tmp_path / "net"), "--data", world["prompts"], "--device", "cpu"]
    cases = [
        (align + ["-o", str(blocked / "out")], "-o " + str(blocked / "out") + ": " + str(blocked) + " is a file"),
        (align + ["-o", str(read_only / "out")], f"cannot write in {read_only}"),
        (align + ["-o", ok, "--log-csv", str(blocked / "log.csv")], "--log-csv"),
        (align + ["--precompute-teacher", str(blocked / "cache")], "--precompute-teacher"),
        (align + ["-o", ok, "--lr", "nan"], "--lr must be a finite number, got nan"),
        (align + ["-o", ok, "--temperature", "inf"], "--temperature must be a finite number"),
        (align + ["-o", ok, "--weight-decay", "nan"], "--weight-decay must be a finite number"),
        (align + ["-o", ok, "--max-grad-norm", "inf"], "--max-grad-norm must be a finite number"),
        (align + ["-o", ok, "--hidden-noise", "nan"], "--hidden-noise must be a finite number"),
        (align + ["-o", ok, "--empty-prompt-prob", "nan"], "--empty-prompt-prob must be a finite number"),
        (align + ["-o", ok, "--guidance", "inf"], "--guidance must be a finite number"),
        (align + ["-o", ok, "--term-weights", "double_text=nan"], "weights must be finite"),
        (align + ["-o", ok, "--resolution", "8192"], "--resolution must be between 1 and 4096"),
        (align + ["-o", ok, "--batch-size", "100", "--resolution", "1024"], "100 megapixels at once"),
        (align + ["-o", ok, "--teacher-max-length", "100000"], "--teacher-max-length must be between 1 and 4096"),
        (evaluate + ["--save-images", str(blocked / "img")], "--save-images"),
        (evaluate + ["--json", str(blocked / "e.json")], "--json"),
        (evaluate + ["--json", str(read_only / "e.json")], f"cannot write in {read_only}"),
        (evaluate + ["--guidance", "nan"], "--guidance must be a finite number"),
        (evaluate + ["--steps", "5000"], "--steps must be between 1 and 1000"),
        (evaluate + ["--resolution", "9000"], "--resolution must be between 1 and 4096"),
        (evaluate + ["--teacher-max-length", "100000"], "--teacher-max-length must be between"),
    ]
    runner = CliRunner()
    for args, match in cases:
        res = runner.invoke(cli, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.output.count("\n") == 1 and match in res.output, (args, res.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["some.txt", *([read_only.name] if
                                                                                read_only.parent == tmp_path else [])])


def test_align_refuses_what_memory_cannot_hold(world, tmp_path, monkeypatch):
    monkeypatch.setattr("x2i_core.limits.available_bytes", lambda device: 1024)
    with pytest.raises(InputError, match="--batch-size 2 at --resolution 16 needs about .* GiB of working memory"):
        run_alignment(tiny_config(world, tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_init_decides_the_architecture_and_the_record_says_so(world, tmp_path, capsys):
    import json

    run_alignment(tiny_config(world, tmp_path / "first", steps=2, fusion="scale", context_layers=1))
    capsys.readouterr()
    # the continuation names no architecture options: it keeps --init's, and its record and resume say so
    run_alignment(tiny_config(world, tmp_path / "second", steps=4, checkpoint_every=2, stop_after=2,
                              init=str(tmp_path / "first")))
    assert "architecture comes from --init: --fusion conv -> scale, --context-layers 0 -> 1" in capsys.readouterr().out
    saved = json.loads(next((tmp_path / "second" / "checkpoints").glob("*/state.json")).read_text())["config"]
    assert saved["fusion"] == "scale" and saved["context_layers"] == 1
    run_alignment(tiny_config(world, tmp_path / "second", steps=4, checkpoint_every=2, resume="latest",
                              init=str(tmp_path / "first")))
    recorded = json.loads((tmp_path / "second" / "x2i_align.json").read_text())["config"]
    config = json.loads((tmp_path / "second" / "config.json").read_text())
    assert recorded["fusion"] == config["fusion"] == "scale" and recorded["context_layers"] == config["context_layers"] == 1


def test_sigterm_saves_a_checkpoint_and_resume_matches(world, tmp_path):
    """A real process, signalled mid-run: it checkpoints and exits 0; --resume then follows the straight run."""
    args = ["align", "--encoder", world["encoder"], "--backbone", world["backbone"], "--data", world["prompts"],
            "--steps", "30", "--batch-size", "2", "--lr", "1e-3", "--warmup", "2", "--resolution", "32",
            "--teacher-max-length", "24", "--no-gradient-checkpointing", "--checkpoint-every", "100", "--quiet",
            "--device", "cpu"]
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "x2i_cli.main", *args, "-o", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "train_log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 2:  # header + 1 step
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.02)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    stopped_at = len(read_csv_log(log))
    assert stopped_at < 30, "the run finished before the signal arrived"
    assert "--resume" in output and (out / "checkpoints" / f"step-{stopped_at:08d}").is_dir()

    from x2i_cli.main import cli

    runner = CliRunner()
    res = runner.invoke(cli, [*args, "-o", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, [*args, "-o", str(tmp_path / "straight")])
    assert res.exit_code == 0, res.output
    straight, resumed = _rows(tmp_path / "straight" / "train_log.csv"), _rows(log)
    assert len(resumed) == 30
    assert [float(r["loss"]) for r in straight] == pytest.approx([float(r["loss"]) for r in resumed], rel=1e-6)


def test_teacher_cache_gives_the_same_run(world, tmp_path):
    from x2i_cli.main import cli

    res = CliRunner().invoke(cli, ["align", "--backbone", world["backbone"], "--data", world["prompts"],
                                   "--teacher-max-length", "24", "--device", "cpu",
                                   "--precompute-teacher", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    assert "12 prompts" in res.output
    run_alignment(tiny_config(world, tmp_path / "live", steps=3))
    run_alignment(tiny_config(world, tmp_path / "cached", steps=3, teacher_cache=str(tmp_path / "cache")))
    live, cached = _rows(tmp_path / "live" / "train_log.csv"), _rows(tmp_path / "cached" / "train_log.csv")
    assert [r["loss"] for r in live] == [r["loss"] for r in cached]


def test_cli_errors_are_one_line(world, tmp_path):
    from x2i_cli.main import cli

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    runner = CliRunner()
    res = runner.invoke(cli, ["align", "--data", str(empty), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "empty.jsonl: empty" in res.output and res.output.count("\n") == 1
    assert not (tmp_path / "o").exists()  # no partial output
    res = runner.invoke(cli, ["align", "--data", world["prompts"]])
    assert res.exit_code == 2 and "no output folder" in res.output
    res = runner.invoke(cli, ["align", "--data", world["prompts"], "-o", str(tmp_path / "o"), "--resume"])
    assert res.exit_code == 2 and "no checkpoint" in res.output
    (tmp_path / "used" / "checkpoints" / "step-00000002").mkdir(parents=True)
    (tmp_path / "used" / "checkpoints" / "step-00000002" / "state.json").write_text("{}")
    res = runner.invoke(cli, ["align", "--data", world["prompts"], "-o", str(tmp_path / "used")])
    assert res.exit_code == 2 and "already holds checkpoints" in res.output and "--resume" in res.output
    res = runner.invoke(cli, ["align", "--data", world["prompts"], "-o", str(tmp_path / "o"), "--term-weights", "x=1"])
    assert res.exit_code == 2 and "KIND=WEIGHT" in res.output
    # a bad --init (or eval-align --aligner) fails before any model loads (the default encoder is a hub id)
    res = runner.invoke(cli, ["align", "--data", world["prompts"], "-o", str(tmp_path / "o"),
                              "--init", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "--init: AlignNet folder not found" in res.output
    res = runner.invoke(cli, ["eval-align", "--aligner", str(tmp_path / "nope"), "--data", world["prompts"]])
    assert res.exit_code == 2 and "AlignNet folder not found" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("options", [
    {"gradient_checkpointing": True},
    {"timesteps": "uniform"},
    {"timesteps": "shifted", "intermediate_latents": "teacher"},
    {"image_side_only": True, "loss": "js"},
    {"mixed_precision": "bf16", "loss": "kl", "fusion": "scale", "skip_layers": 1},
    {"loss": "mse", "fusion": "last", "masked_pool": False, "tensorboard": True},
    {"token_kernel": 1},
    {"fusion": "scale", "context_layers": 1},
])
def test_options_train(world, tmp_path, options):
    result = run_alignment(tiny_config(world, tmp_path / "o", steps=2, **options))
    rows = read_csv_log(tmp_path / "o" / "train_log.csv")
    assert len(rows) == 2 and all(float(r["loss"]) > 0 for r in rows) and result.skipped_steps == 0
    kinds = {k.split("/")[0] for k in rows[0] if "/" in k}
    assert kinds == ({"double_image", "single_image"} if options.get("image_side_only") else
                     {"double_image", "double_text", "single_image", "single_text"})
    if options.get("tensorboard"):
        assert list((tmp_path / "o" / "tensorboard").glob("events.out.tfevents.*"))


def test_gradient_checkpointing_does_not_change_the_trajectory(world, tmp_path):
    run_alignment(tiny_config(world, tmp_path / "plain", steps=3))
    run_alignment(tiny_config(world, tmp_path / "ckpt", steps=3, gradient_checkpointing=True))
    a, b = _rows(tmp_path / "plain" / "train_log.csv"), _rows(tmp_path / "ckpt" / "train_log.csv")
    assert [float(r["loss"]) for r in a] == pytest.approx([float(r["loss"]) for r in b], rel=1e-5)


def test_adamw8bit_without_bitsandbytes_is_a_clear_error(world, tmp_path, monkeypatch):

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(InputError, match="needs bitsandbytes"):
        run_alignment(tiny_config(world, tmp_path / "o", optimizer="adamw8bit"))


def test_eval_align_cli_uses_what_the_alignnet_records(world, tmp_path):
    import json

    from x2i_cli.main import cli

    run_alignment(tiny_config(world, tmp_path / "net", steps=2))
    # no --encoder, --backbone or --resolution: the AlignNet's record gives all three
    res = CliRunner().invoke(cli, ["eval-align", "--aligner", str(tmp_path / "net"), "--data", world["prompts"],
                                   "--num-prompts", "2", "--steps", "2",
                                   "--teacher-max-length", "24", "--device", "cpu", "--json", str(tmp_path / "e.json"),
                                   "--save-images", str(tmp_path / "img")])
    assert res.exit_code == 0, res.output
    assert "Note" not in res.output
    from PIL import Image

    assert Image.open(tmp_path / "img" / "student-000.png").size == (16, 16)
    assert "PSNR" in res.output and "final latent MSE" in res.output and "double_image" in res.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["prompts"] == 2 and data["latent_mse"] >= 0 and len(data["per_prompt"]) == 2
    assert len(list((tmp_path / "img").glob("*.png"))) == 4


def test_empty_prompts_are_dropped_in_deterministically(world, tmp_path):
    from x2i_core.align.trainer import drop_prompts

    cfg = tiny_config(world, tmp_path / "a", empty_prompt_prob=0.5)
    texts = [f"prompt {i}" for i in range(200)]
    a, b = drop_prompts(texts, cfg, 3, 0, 0), drop_prompts(texts, cfg, 3, 0, 0)
    assert a == b and 60 < a.count("") < 140 and all(t in ("", s) for t, s in zip(a, texts))
    assert drop_prompts(texts, cfg, 4, 0, 0) != a  # another step, other prompts
    assert drop_prompts(texts, tiny_config(world, tmp_path / "b"), 3, 0, 0) == texts  # off by default
    run_alignment(tiny_config(world, tmp_path / "run", steps=2, empty_prompt_prob=0.5))  # "" passes both encoders
    with pytest.raises(InputError, match="empty-prompt-prob"):
        tiny_config(world, tmp_path / "c", empty_prompt_prob=1.0).validate()


def test_hidden_noise_scales_with_each_layer_and_spares_padding():
    from x2i_core.align.sampling import perturb_hidden_states, step_generator

    states = torch.randn(4, 3, 6, 32) * torch.tensor([0.1, 1.0, 10.0])[None, :, None, None]
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[0, 4:] = False
    states[0, :, 4:] = 0
    noisy = perturb_hidden_states(states, mask, 0.5, step_generator(0, 1))
    delta = noisy - states
    assert torch.equal(delta[0, :, 4:], torch.zeros_like(delta[0, :, 4:]))  # padding stays zero
    per_layer = delta[1:].pow(2).mean(dim=(0, 2, 3)).sqrt() / states[1:].pow(2).mean(dim=(0, 2, 3)).sqrt()
    assert per_layer.tolist() == pytest.approx([0.5] * 3, rel=0.15)  # noise = 0.5 x each layer's own RMS
    assert torch.equal(noisy, perturb_hidden_states(states, mask, 0.5, step_generator(0, 1)))  # reproducible
    assert perturb_hidden_states(states, mask, 0.0, step_generator(0, 1)) is states  # off = untouched


def test_hidden_noise_and_weight_decay_train_and_are_recorded(world, tmp_path):
    import json


    run_alignment(tiny_config(world, tmp_path / "plain", steps=2))
    run_alignment(tiny_config(world, tmp_path / "noisy", steps=2, hidden_noise=0.3, weight_decay=0.5))
    plain, noisy = _rows(tmp_path / "plain" / "train_log.csv"), _rows(tmp_path / "noisy" / "train_log.csv")
    assert plain[0]["loss"] != noisy[0]["loss"]  # the noise reaches the student's first step
    recorded = json.loads((tmp_path / "noisy" / "x2i_align.json").read_text())["config"]
    assert recorded["hidden_noise"] == 0.3 and recorded["weight_decay"] == 0.5
    for bad in ({"hidden_noise": -1.0}, {"weight_decay": -0.1}, {"skip_layers": -1},
                {"token_kernel": 2}, {"token_kernel": 1, "fusion": "scale"},
                {"context_layers": -1}):
        with pytest.raises(InputError):
            tiny_config(world, tmp_path / "bad", **bad).validate()
    with pytest.raises(InputError, match="leaves nothing to fuse"):
        run_alignment(tiny_config(world, tmp_path / "bad", skip_layers=99))

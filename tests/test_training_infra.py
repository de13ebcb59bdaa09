"""The shared training infrastructure (x2i_core.training): a toy task on run_training (loss falls, stop + resume
identical, SIGTERM checkpoints), options built from a config dataclass, trainable-only checkpoints, the schedule,
and the trainers' GPU benchmark at tiny scale on CPU."""
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from x2i_core.errors import CheckpointError
from x2i_core.training import TrainingConfig, opt
from x2i_core.training.edit_data import IndexStream
from x2i_core.training.logs import read_csv_log
from x2i_core.training.loop import StepLoss, TrainingTask, run_training
from x2i_core.training.options import config_options, config_values

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@dataclass
class ToyConfig(TrainingConfig):
    """A config with one field of its own."""

    width: int = opt(4, "Width of the toy layer.")
    kill_at: int | None = opt(None, "Send this process SIGTERM during this step (tests).")


class ToyModule(torch.nn.Module):
    """A frozen layer and a trained one: checkpoints hold only the trained tensors."""

    def __init__(self, width):
        super().__init__()
        self.frozen = torch.nn.Linear(width, width).requires_grad_(False)
        self.head = torch.nn.Linear(width, 1)

    def forward(self, x):
        return self.head(self.frozen(x))


class ToyTask(TrainingTask):
    """Regression onto a fixed random direction; the data are seeded by (seed, step, micro, rank)."""

    label = "toy"
    weights_dir = "toy"

    def __init__(self, cfg: ToyConfig):
        self.cfg = cfg
        self.saved = None

    def stream(self, rank, world):
        return IndexStream(32, self.cfg.seed, rank, world)

    def build(self, device):
        torch.manual_seed(1)
        self.target = torch.randn(self.cfg.width, 1)
        return ToyModule(self.cfg.width)

    def step(self, model, batch, step, micro, rank):
        if self.cfg.kill_at == step:
            os.kill(os.getpid(), signal.SIGTERM)
        g = torch.Generator().manual_seed(1000 * step + micro + sum(batch))
        x = torch.randn(len(batch), self.cfg.width, generator=g)
        loss = torch.nn.functional.mse_loss(model(x), x @ self.target)
        return StepLoss(loss, {"mse": float(loss.detach())})

    def state(self):
        return {"config": self.cfg.to_dict()}

    def save_final(self, module, output, summary):
        self.saved = summary
        torch.save({"head": module.head.weight.detach().clone()}, output / "head.pt")


def _toy(out, **overrides):
    settings = dict(output_dir=str(out), steps=12, batch_size=4, lr=0.05, warmup=1, checkpoint_every=100,
                    progress=False, device="cpu", gradient_checkpointing=False)
    settings.update(overrides)
    return ToyConfig(**settings)


def _head(out):
    return torch.load(out / "head.pt", weights_only=True)["head"]


def test_loop_trains_resumes_exactly_and_stops_on_sigterm(tmp_path):
    task = ToyTask(_toy(tmp_path / "straight"))
    result = run_training(task.cfg, task)
    losses = [float(r["mse"]) for r in read_csv_log(tmp_path / "straight" / "train_log.csv")]
    assert not result.interrupted and len(losses) == 12 and sum(losses[-3:]) < 0.5 * sum(losses[:3])
    assert task.saved["steps"] == 12 and task.saved["resumes"] == []

    stopped = run_training(_toy(tmp_path / "broken", checkpoint_every=3, stop_after=5),
                           ToyTask(_toy(tmp_path / "broken", checkpoint_every=3, stop_after=5)))
    assert stopped.interrupted and stopped.step == 5
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "broken" / "checkpoints" / "step-00000005" / "toy" /
                          "diffusion_pytorch_model.safetensors"))
    assert set(saved) == {"head.weight", "head.bias"}  # the frozen layer is not in the checkpoint
    cfg = _toy(tmp_path / "broken", checkpoint_every=3, resume=str(tmp_path / "broken" / "checkpoints" / "step-00000003"))
    resumed_task = ToyTask(cfg)
    run_training(cfg, resumed_task)
    assert torch.equal(_head(tmp_path / "straight"), _head(tmp_path / "broken"))
    assert resumed_task.saved["resumes"][0]["step"] == 3
    assert [int(r["step"]) for r in read_csv_log(tmp_path / "broken" / "train_log.csv")] == list(range(1, 13))

    # SIGTERM mid-step: the step finishes, a checkpoint is written, the run says it was interrupted
    cfg = _toy(tmp_path / "killed", kill_at=6)
    killed = run_training(cfg, ToyTask(cfg))
    assert killed.interrupted and killed.step == 7 and killed.checkpoint.name == "step-00000007"
    cfg = _toy(tmp_path / "killed", resume="latest")
    run_training(cfg, ToyTask(cfg))
    assert torch.equal(_head(tmp_path / "straight"), _head(tmp_path / "killed"))

    # a checkpoint of another module is one CheckpointError line
    cfg = _toy(tmp_path / "broken", width=5, resume="latest", steps=13)
    with pytest.raises(CheckpointError, match="does not fit this run"):
        run_training(cfg, ToyTask(cfg))


def test_options_come_from_the_dataclass():
    @click.command()
    @config_options(ToyConfig)
    def command(**opts):
        click.echo(repr(ToyConfig(**config_values(ToyConfig, opts))))

    runner = CliRunner()
    help_text = runner.invoke(command, ["--help"]).output
    assert "Width of the toy layer." in help_text and "[default: 4]" in help_text and "-o, --output DIR" in help_text
    assert "--gradient-checkpointing / --no-gradient-checkpointing" in help_text and "--quiet" in help_text
    out = runner.invoke(command, ["-o", "x", "--resume", "--quiet", "--no-gradient-checkpointing", "--width", "7",
                                 "--mixed-precision", "bf16"]).output
    cfg = eval(out, {"ToyConfig": ToyConfig})  # noqa: S307  (our own repr)
    assert (cfg.output_dir, cfg.resume, cfg.progress, cfg.gradient_checkpointing, cfg.width, cfg.mixed_precision) == \
        ("x", "latest", False, False, 7, "bf16")
    assert eval(runner.invoke(command, []).output, {"ToyConfig": ToyConfig}) == ToyConfig()  # noqa: S307
    assert runner.invoke(command, ["--mixed-precision", "fp8"]).exit_code == 2


def test_align_options_are_its_config_fields():
    from dataclasses import fields

    from x2i_cli.align import align
    from x2i_core.align.config import AlignConfig

    params = {p.name: p for p in align.params}
    for f in fields(AlignConfig):
        assert f.name in params, f.name
        assert params[f.name].help == f.metadata["help"]
    assert params["steps"].default == 8000 and params["output_dir"].opts == ["-o", "--output"]


def test_warmup_cosine_schedule():
    from x2i_core.training.optim import cosine_with_warmup

    assert [cosine_with_warmup(s, 2, 10) for s in (0, 1)] == [0.5, 1.0]
    assert cosine_with_warmup(2, 2, 10) == 1.0 and cosine_with_warmup(10, 2, 10) == pytest.approx(0.0)
    assert cosine_with_warmup(6, 2, 10) == pytest.approx(0.5)


def test_trainers_gpu_benchmark_tiny_scale_runs_on_cpu(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_train_gpu

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = bench_train_gpu.main(["--scale", "tiny", "--trainers", "train-lora", "train-lightcontrol",
                                     "--sizes", "16", "32", "--steps", "1"])
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert code == 0 and "train-lora" in out and "32x32" in out and "train-lightcontrol" in out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_train_gpu.main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    sys.modules.pop("bench_train_gpu", None)

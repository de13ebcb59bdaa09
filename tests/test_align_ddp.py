"""Two real processes (torchrun + gloo on CPU): DDP keeps the AlignNet identical on both ranks, rank 0 alone
writes, and a run stopped and resumed under DDP follows the uninterrupted one."""
import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _align_tiny import tiny_world
from x2i_core.align.logs import read_csv_log

WORKER = Path(__file__).parent / "_align_ddp_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(world, out: Path, mode: str) -> list[list[str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(WORKER),
           world["encoder"], world["backbone"], world["prompts"], str(out), mode]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [(out.parent / f"hash-{mode}-rank{r}.txt").read_text().split() for r in (0, 1)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.getbasetemp() / "align-tiny")


def test_two_processes_end_with_identical_weights_and_resume_exactly(world, tmp_path):
    out = tmp_path / "straight" / "alignnet"
    hashes = _torchrun(world, out, "straight")
    assert hashes[0][1] == hashes[1][1] == "2", "both processes must see a world of 2"
    assert hashes[0][0] == hashes[1][0], "the ranks' AlignNets differ"
    rows = read_csv_log(out / "train_log.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]  # one CSV, written by rank 0 only
    ckpt = out / "checkpoints" / "step-00000004"
    assert (ckpt / "rng-rank0.pt").is_file() and (ckpt / "rng-rank1.pt").is_file()
    assert not list((out / "checkpoints").glob(".tmp-*"))
    saved = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    digest = hashlib.sha256(b"".join(saved[k].contiguous().numpy().tobytes() for k in sorted(saved))).hexdigest()
    assert digest == hashes[0][0]
    assert torch.isfinite(torch.tensor([float(r["loss"]) for r in rows])).all()

    broken = tmp_path / "broken" / "alignnet"
    stopped = _torchrun(world, broken, "stop")
    assert stopped[0][2] == stopped[1][2] == "2" and not (broken / "config.json").exists()
    resumed = _torchrun(world, broken, "resume")
    assert resumed[0][0] == resumed[1][0]
    again = read_csv_log(broken / "train_log.csv")
    assert [float(r["loss"]) for r in again] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-6)
    final = load_file(str(broken / "diffusion_pytorch_model.safetensors"))
    assert all(torch.allclose(final[k], saved[k], atol=1e-7) for k in saved)

"""The alignment benchmarks' code paths: the GPU benchmark at tiny scale on CPU, and its refusal without CUDA."""
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench_gpu():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_align_gpu

        yield bench_align_gpu
    finally:
        sys.path.remove(str(BENCH))


def test_gpu_benchmark_tiny_scale_runs_on_cpu(bench_gpu, capsys):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert bench_gpu.main(["--scale", "tiny", "--sizes", "16", "--steps", "1"]) == 0
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert "16x16" in out and "prompts/s" in out and "weights" in out


def test_gpu_benchmark_refuses_without_cuda(bench_gpu, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err

"""The checks every command makes before anything loads: finite numbers and caps (x2i_core.limits), outputs that can
be written and file modes that follow the umask (x2i_core.outputs), and the models an AlignNet records
(x2i_core.aligner_record). No model is loaded here."""
import json
import os

import pytest

from _writable import read_only_dir
from x2i_core import limits
from x2i_core.aligner_record import AlignerRecord, fill_models, read_record
from x2i_core.errors import InputError
from x2i_core.outputs import check_output_dir, check_output_file, follow_umask


@pytest.mark.parametrize("values, match", [
    ({"--guidance": float("nan")}, "--guidance must be a finite number, got nan"),
    ({"--lr": float("inf")}, "--lr must be a finite number, got inf"),
    ({"--true-cfg": float("-inf")}, "--true-cfg must be a finite number"),
])
def test_non_finite_numbers_are_refused(values, match):
    with pytest.raises(InputError, match=match):
        limits.check_finite(values)
    limits.check_finite({"--guidance": 3.5, "--true-cfg": None})  # finite and unset pass


@pytest.mark.parametrize("kwargs, match", [
    ({"width": 8192}, "--width must be between 1 and 4096 pixels"),
    ({"height": 4097}, "--height must be between 1 and 4096"),
    ({"num_images": 65}, "--num-images must be between 1 and 64"),
    ({"num_images": 5, "width": 4096, "height": 4096}, "80 megapixels at once; at most 64"),
    ({"steps": 1001}, "--steps must be between 1 and 1000"),
    ({"seed": 2**64}, "--seed must be between"),
    ({"text": "x" * 10_001}, "10001 characters; at most 10000"),
    ({"negative_prompt": "x" * 10_001}, "--negative-prompt has 10001 characters"),
    ({"guidance": float("nan")}, "--guidance must be a finite number"),
])
def test_generation_limits(kwargs, match):
    with pytest.raises(InputError, match=match):
        limits.check_generation(**kwargs)
    limits.check_generation(width=4096, height=4096, num_images=4, steps=1000, text="x" * 10_000)  # at the caps


def test_memory_estimate_refuses_what_the_device_cannot_hold(monkeypatch):
    import torch

    class Backbone:  # the members the estimate reads, at FLUX.1-dev sizes
        size_multiple, prompt_embed_dim = 16, 4096
        transformer = torch.nn.Linear(1, 1).to(torch.bfloat16)

    one = limits.sampling_bytes(Backbone, 1, 1024, 1024, 512)
    assert 1 * 2**30 < one < 4 * 2**30  # about 1.7 GiB of working memory for one 1024x1024 image in bf16
    assert limits.sampling_bytes(Backbone, 4, 1024, 1024, 512) == 4 * one
    ckpt = limits.training_bytes(Backbone, 1, 1024, 512, blocks=57, checkpointing=True)
    assert ckpt < limits.training_bytes(Backbone, 1, 1024, 512, blocks=57, checkpointing=False)
    monkeypatch.setattr(limits, "available_bytes", lambda device: 2**30)
    with pytest.raises(InputError, match=r"needs about 1\.\d GiB .* more than the 1\.0 GiB free on cpu; lower"):
        limits.check_memory(one, "cpu", "1 image(s) of 1024x1024", "lower --num-images")
    monkeypatch.setenv(limits.MEMORY_CHECK_ENV, "off")
    limits.check_memory(one, "cpu", "1 image", "lower it")  # switched off: passes
    monkeypatch.undo()
    assert limits.available_bytes("cpu") > 0  # /proc/meminfo on Linux


def test_output_checks_create_nothing(tmp_path):
    (tmp_path / "some.txt").write_text("a file")
    with pytest.raises(InputError, match="some.txt is a file, so nothing can be written under it"):
        check_output_file(tmp_path / "some.txt" / "out.png")
    with pytest.raises(InputError, match="some.txt is a file"):
        check_output_dir(tmp_path / "some.txt" / "deeper" / "dir")
    with pytest.raises(InputError, match="a file is in the way"):
        check_output_dir(tmp_path / "some.txt")
    with pytest.raises(InputError, match="is a folder"):
        check_output_file(tmp_path)
    read_only = read_only_dir(tmp_path)
    with pytest.raises(InputError, match=f"--save-images {read_only}/new/dir: cannot write in {read_only}"):
        check_output_dir(read_only / "new" / "dir", "--save-images")
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["some.txt"] + (["read-only"] if os.geteuid() else []))


def test_follow_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        path = tmp_path / "f"
        path.write_text("x")
        path.chmod(0o600)  # as tempfile.mkstemp and safetensors leave them
        follow_umask([path, tmp_path])
        assert (path.stat().st_mode & 0o777, tmp_path.stat().st_mode & 0o777) == (0o640, 0o750)
    finally:
        os.umask(previous)


def test_the_record_fills_what_is_not_given(tmp_path):
    folder = tmp_path / "net"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "AlignNet", "encoder": "qwen2.5-vl", "encoder_checkpoint": "/models/qwen",
        "backbone": "flux", "backbone_checkpoint": "/models/flux", "resolution": 512}))
    record = read_record(str(folder))
    assert record == AlignerRecord("qwen2.5-vl", "/models/qwen", "flux", "/models/flux", 512)
    nothing = dict.fromkeys(("encoder", "encoder_path", "backbone", "backbone_path"))
    chosen, note = fill_models(record, nothing)
    assert chosen == {"encoder": "qwen2.5-vl", "encoder_path": "/models/qwen", "backbone": "flux",
                      "backbone_path": "/models/flux"} and note is None
    # the same models named explicitly: no note
    assert fill_models(record, chosen)[1] is None
    # a given checkpoint keeps the recorded name; a differing one is one note line
    chosen, note = fill_models(record, {**nothing, "encoder_path": "/other/qwen"})
    assert chosen["encoder"] == "qwen2.5-vl" and chosen["backbone_path"] == "/models/flux"
    assert note == "Note: this AlignNet was aligned with encoder qwen2.5-vl (/models/qwen); using qwen2.5-vl (/other/qwen)"
    # a given name takes no recorded checkpoint; two differences are still one line
    chosen, note = fill_models(record, {**nothing, "encoder": "qwen2.5-vl-3b", "backbone_path": "/other/flux"})
    assert chosen["encoder_path"] is None
    assert note.count("\n") == 0 and note.startswith("Note: this AlignNet was aligned with encoder qwen2.5-vl")
    assert "using encoder qwen2.5-vl-3b and backbone flux (/other/flux)" in note
    # older `x2i align` folders: the checkpoints come from x2i_align.json; an empty record changes nothing
    (folder / "config.json").write_text(json.dumps({"_class_name": "AlignNet", "encoder": "qwen2.5-vl"}))
    (folder / "x2i_align.json").write_text(json.dumps({"encoder_path": "/old/qwen", "backbone": "flux"}))
    assert read_record(str(folder)) == AlignerRecord("qwen2.5-vl", "/old/qwen", "flux", None, None)
    assert fill_models(read_record(None), nothing) == (nothing, None)

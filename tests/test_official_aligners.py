"""Official AlignNets without network: a local stand-in for the hub (huggingface_hub's cache layout holding a tiny
reference-format file), first use converts, the second reuses, offline gives one line, a tampered file is refused,
`x2i fetch-aligner --from FILE` fills the cache by hand, and `x2i generate --encoder qwen2.5-vl-7b --backbone flux-dev`
needs no --aligner."""
import json
import os
import subprocess
import sys

import pytest
import torch

from x2i_core import OfficialAligner
from x2i_core.errors import CheckpointError
from x2i_core.official import SOURCE_RECORD, WEIGHTS, official_folder
from x2i_core.plugins import get_registry

REPO, FILE, NAME = "OPPOer/X2I", "qwen2.5-vl-7b_proj.pt", "x2i-qwen2.5-vl-7b"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def reference_file(path, layers=3, hidden=16, prompt=32, pooled=24, seed=0):
    """A reference-format hub file: {"config", "state_dict"} with the reference's key names (method.md)."""
    g = torch.Generator().manual_seed(seed)
    state = {
        "conv.weight": torch.randn(1, layers, 5, 5, generator=g), "conv.bias": torch.randn(1, generator=g),
        "mlp.layernorm.weight": torch.ones(hidden), "mlp.layernorm.bias": torch.zeros(hidden),
        "mlp.projector.0.weight": torch.randn(prompt, hidden, generator=g) / hidden ** 0.5,
        "mlp.projector.2.weight": torch.randn(prompt, prompt, generator=g) / prompt ** 0.5,
        "mlp.fc.1.weight": torch.randn(pooled, prompt, generator=g) / prompt ** 0.5,
        "mlp.fc.1.bias": torch.zeros(pooled),
    }
    torch.save({"config": {"in_channels": layers}, "state_dict": state}, path)
    return path


def hub_stand_in(root, **shape):
    """huggingface_hub's cache layout for REPO at COMMIT holding FILE: what a past download leaves on disk."""
    repo = root / "models--OPPOer--X2I"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    return reference_file(snapshot / FILE, **shape)


@pytest.fixture
def caches(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    hub = tmp_path / "hub"
    source = hub_stand_in(hub)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("X2I_CACHE", str(tmp_path / "x2i-cache"))
    return hub, source


def _load():
    spec = get_registry().get("aligner", NAME)
    return OfficialAligner.from_pretrained(spec.pretrained, **spec.options)


def test_registered_official_aligners_fit_qwen_on_flux_family():
    registry = get_registry()
    spec = registry.get("aligner", NAME)
    assert (spec.pretrained, spec.options["filename"], spec.fits) == (REPO, FILE, {"encoder": "qwen2.5-vl-7b",
                                                                                    "backbone": "flux-dev"})
    assert [s.name for s in registry.aligners_for("qwen2.5-vl-7b", "flux-dev")] == [NAME]
    assert [s.name for s in registry.aligners_for("qwen2.5-vl-7b", "flux-schnell")] == [NAME]  # same family
    assert [s.name for s in registry.aligners_for("qwen2.5-vl-7b", "shapes")] == [NAME]  # a flux preset too (widths are checked later)
    assert registry.aligners_for("qwen2.5-vl-3b", "flux-dev")[0].name == "x2i-qwen2.5-vl-3b"


def test_first_use_converts_second_reuses(caches):
    hub, source = caches
    net = _load()
    folder = official_folder(NAME)
    record = json.loads((folder / SOURCE_RECORD).read_text())
    assert (record["repo_id"], record["filename"], record["revision"]) == (REPO, FILE, COMMIT)
    assert len(record["source_sha256"]) == 64 and net.config.encoder == "qwen2.5-vl-7b"
    assert net.masked_pool is False  # the reference's weights average padding too
    assert net.prompt_template == "reference"  # its encoder gives the inputs it was trained on
    state = torch.load(source, weights_only=True)["state_dict"]
    assert torch.equal(net.layer_fusion.weight, state["conv.weight"])
    source.unlink()  # a second use needs neither the hub nor the source file
    again = _load()
    assert torch.equal(again.project_out.weight, net.project_out.weight)


def test_offline_and_not_cached_says_what_to_download(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("X2I_CACHE", str(tmp_path / "x2i-cache"))
    with pytest.raises(CheckpointError) as err:
        _load()
    message = str(err.value)
    assert "\n" not in message and FILE in message and REPO in message and f"x2i fetch-aligner {NAME} --from" in message
    assert not official_folder(NAME).exists()  # nothing half-written


def test_tampered_cache_and_changed_source_are_refused(caches, monkeypatch):
    _load()
    weights = official_folder(NAME) / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="changed or is corrupt"):
        _load()
    # a pinned sha256 refuses a source that is not the released file
    import shutil

    from x2i_core.official import prepare

    shutil.rmtree(official_folder(NAME))
    with pytest.raises(CheckpointError, match="changed or corrupt file is refused"):
        prepare(NAME, REPO, FILE, sha256="0" * 64)
    assert not official_folder(NAME).exists()


def _x2i(args, env_extra, cwd):
    env = {**os.environ, **env_extra}
    code = "import sys; from x2i_cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def test_fetch_aligner_from_a_file_copied_by_hand(tmp_path):
    copied = reference_file(tmp_path / FILE)
    env = {"X2I_CACHE": str(tmp_path / "cache"), "HF_HUB_CACHE": str(tmp_path / "no-hub")}
    result = _x2i(["fetch-aligner", NAME, "--from", str(copied)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "cache" / "aligners" / NAME
    assert result.stdout.strip() == str(folder) and (folder / WEIGHTS).is_file()
    bad = _x2i(["fetch-aligner", "shapes"], env, tmp_path)
    assert bad.returncode == 2 and "not an official aligner" in bad.stderr
    offline = _x2i(["fetch-aligner", "x2i-qwen2.5-vl-3b"], env, tmp_path)
    assert offline.returncode == 2 and "--from FILE" in offline.stderr and "Traceback" not in offline.stderr


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny Qwen2.5-VL and a tiny Flux folder, and the shape of a reference AlignNet that fits both."""
    from x2i_core.plugins import load_component
    from x2i_plugins.backbones.flux.tiny import POOLED_DIM, PROMPT_DIM, write_tiny_flux
    from x2i_plugins.encoders.qwen25vl.tiny import write_tiny_qwen25vl

    root = tmp_path_factory.mktemp("models")
    qwen = write_tiny_qwen25vl(root / "qwen", seed=0)
    flux = write_tiny_flux(root / "flux", seed=0, with_teacher=False)
    enc = load_component("encoder", "qwen2.5-vl", qwen, device="cpu")
    shape = dict(layers=enc.num_layers, hidden=enc.hidden_size, prompt=PROMPT_DIM, pooled=POOLED_DIM)
    return str(qwen), str(flux), shape


@pytest.mark.parametrize("backbone, variant_note", [("flux-dev", False), ("flux-schnell", True)])
def test_generate_needs_no_aligner_with_the_hub_stand_in(tiny_models, tmp_path, backbone, variant_note):
    qwen, flux, shape = tiny_models
    hub_stand_in(tmp_path / "hub", **shape)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "X2I_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    args = ["generate", "--encoder", "qwen2.5-vl-7b", "--encoder-path", qwen, "--backbone", backbone,
            "--backbone-path", flux, "--width", "32", "--height", "32", "--steps", "2", "--device", "cpu",
            "-o", str(tmp_path / "out.png"), "a cat reading a newspaper"]
    result = _x2i(args, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.png").is_file()
    assert f"registered AlignNet '{NAME}'" in result.stderr
    assert ("aligned on flux-dev, used here with flux-schnell" in result.stderr) == variant_note
    from x2i_core.generate import read_metadata

    assert read_metadata(tmp_path / "out.png")["aligner"] == NAME


def test_generate_offline_without_the_file_is_one_line(tiny_models, tmp_path):
    qwen, flux, _ = tiny_models
    env = {"HF_HUB_CACHE": str(tmp_path / "empty-hub"), "X2I_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    args = ["generate", "--encoder", "qwen2.5-vl-7b", "--encoder-path", qwen, "--backbone", "flux-dev",
            "--backbone-path", flux, "--device", "cpu", "-o", str(tmp_path / "out.png"), "a cat"]
    result = _x2i(args, env, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "x2i fetch-aligner x2i-qwen2.5-vl-7b --from FILE" in error[0]
    assert not (tmp_path / "out.png").exists()

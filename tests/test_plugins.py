"""Plugin discovery: built-ins, a third-party plugin installed through its entry point, broken
plugins, the X2I_PLUGINS switch, and name collisions."""
import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

from x2i_core import EncoderSpec, WorldSpec, hookimpl
from x2i_core.errors import PluginError
from x2i_core.plugins import Registry, get_registry

THIRD_PARTY_SETUP = """
from setuptools import setup
setup(
    name="x2i-hello-plugin",
    version="0.3.1",
    py_modules=["x2i_hello", "x2i_broken"],
    entry_points={"x2i": ["hello = x2i_hello", "broken = x2i_broken"]},
)
"""
THIRD_PARTY_MODULE = '''
from x2i_core import EncoderSpec, AdapterSpec, hookimpl

@hookimpl
def register_encoders(register):
    register(EncoderSpec("hello-vlm", "x2i_hello:Encoder", summary="a test encoder", modalities=("text",)))

@hookimpl
def register_adapters(register):
    register(AdapterSpec("hello-lora", "x2i_hello:Adapter", summary="a test adapter"))

@hookimpl
def register_commands(cli):
    import click

    @cli.command()
    def hello():
        """Say hello from a plugin."""
        click.echo("hello from a plugin")
'''
BROKEN_MODULE = "raise ImportError('this plugin is broken on purpose')\n"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """pip-install a real distribution with two `x2i` entry points into a private target folder."""
    src = tmp_path_factory.mktemp("src")
    (src / "setup.py").write_text(THIRD_PARTY_SETUP)
    (src / "x2i_hello.py").write_text(THIRD_PARTY_MODULE)
    (src / "x2i_broken.py").write_text(BROKEN_MODULE)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        check=True, capture_output=True,
    )
    return target


def run_x2i(args, target=None, env_extra=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "X2I_PLUGINS"}  # conftest's "built-ins only" is not wanted here
    env.update(env_extra or {})
    if target is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    code = "import sys; from x2i_cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_builtins_register():
    registry = get_registry()
    assert {"qwen25vl", "flux"} <= set(registry.plugins)
    for info in registry.plugins.values():
        if info.builtin:
            assert info.status == "loaded", info.error


def test_third_party_plugin_via_entry_point_and_broken_one_reported(installed_plugin, tmp_path):
    result = run_x2i(["plugins", "--json"], installed_plugin, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    hello = plugins["hello"]
    assert (hello["distribution"], hello["version"], hello["status"]) == ("x2i-hello-plugin", "0.3.1", "loaded")
    assert {c["name"] for c in hello["components"]} == {"hello-vlm", "hello-lora"}
    broken = plugins["broken"]
    assert broken["status"] == "failed" and "broken on purpose" in broken["error"]
    assert plugins["qwen25vl"]["status"] == "loaded"  # the rest keep working
    # its command is there too
    hello_cmd = run_x2i(["hello"], installed_plugin, cwd=tmp_path)
    assert hello_cmd.stdout.strip() == "hello from a plugin"


@pytest.mark.parametrize("value, expected", [
    ("none", set()), ("x2i", {"flux", "qwen25vl", "shapes"}), ("hello", {"hello"}),
    ("x2i-hello-plugin", {"hello", "broken"}), ("x2i,hello", {"flux", "qwen25vl", "shapes", "hello"}),
    ("flux,qwen25vl", {"flux", "qwen25vl"}),
])
def test_env_var_chooses_plugins_built_ins_included(installed_plugin, tmp_path, value, expected):
    result = run_x2i(["plugins", "--json"], installed_plugin, {"X2I_PLUGINS": value}, cwd=tmp_path)
    loaded = {p["name"] for p in json.loads(result.stdout)}
    # built-ins added later (new plugin folders) may join "x2i": compare the ones this test knows
    known = {"flux", "qwen25vl", "shapes", "hello", "broken"}
    assert loaded & known == expected


def test_built_ins_switched_off_leave_no_default_world(tmp_path):
    result = run_x2i(["generate", "-o", str(tmp_path / "x.png"), "a red circle"], env_extra={"X2I_PLUGINS": "none"},
                     cwd=tmp_path)
    assert result.returncode == 2 and "no default model" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


class _Plugin:
    def __init__(self, name):
        self.name = name

    @hookimpl
    def register_encoders(self, register):
        register(EncoderSpec(self.name, "x2i_hello:Encoder"))


def test_builtins_are_the_plugin_folders():
    from pathlib import Path

    import x2i_plugins

    root = Path(x2i_plugins.__file__).parent
    folders = {f"x2i_plugins.{p.parent.parent.name}.{p.parent.name}" for p in root.glob("*/*/__init__.py")}
    assert set(x2i_plugins.builtin_plugins()) == folders


def test_unknown_hook_fails_the_plugin():
    misspelt = types.SimpleNamespace()

    @hookimpl
    def register_encoder(register):  # missing "s": would silently do nothing
        register(EncoderSpec("never", "x2i_hello:Encoder"))

    misspelt.register_encoder = register_encoder
    registry = Registry()
    info = registry.add_plugin(misspelt, "misspelt")
    assert info.status == "failed" and "unknown hook(s) register_encoder" in info.error
    assert registry.names("encoder") == []
    registry.pm.check_pending()  # nothing unknown is left registered


class _World:
    def __init__(self, name):
        self.name = name

    @hookimpl
    def register_worlds(self, register):
        register(WorldSpec(self.name, encoder="e", backbone="b", aligner="a", message=f"using {self.name}"))


def test_default_world_prefers_a_third_party_one_and_the_env_var(monkeypatch):
    monkeypatch.delenv("X2I_DEFAULT_WORLD", raising=False)
    registry = Registry()
    registry.load_builtins()
    assert registry.default_world().name == "shapes"
    registry.add_plugin(_World("mine"), "mine")
    assert registry.default_world().name == "mine"  # installing a world is a choice
    monkeypatch.setenv("X2I_DEFAULT_WORLD", "shapes")
    assert registry.default_world().name == "shapes"
    monkeypatch.setenv("X2I_DEFAULT_WORLD", "nowhere")
    with pytest.raises(PluginError, match="names no registered world"):
        registry.default_world()
    again = registry.add_plugin(_World("mine"), "mine-again")
    assert again.status == "failed" and "already registered" in again.error


def test_mock_plugin_register_and_unregister():
    registry = Registry()
    registry.load_builtins()
    registry.add_plugin(_Plugin("mock-vlm"), "mock")
    assert registry.get("encoder", "mock-vlm").plugin == "mock"
    registry.remove_plugin("mock")
    with pytest.raises(PluginError, match="unknown encoder 'mock-vlm'"):
        registry.get("encoder", "mock-vlm")


def test_name_collision_fails_only_the_newcomer():
    registry = Registry()
    registry.add_plugin(_Plugin("same"), "first")
    info = registry.add_plugin(_Plugin("same"), "second")
    assert info.status == "failed" and "already registered by plugin 'first'" in info.error
    assert registry.get("encoder", "same").plugin == "first"


def test_failing_hook_does_not_stop_others():
    bad = types.SimpleNamespace()

    @hookimpl
    def register_encoders(register):
        raise RuntimeError("boom")

    bad.register_encoders = register_encoders
    registry = Registry()
    info = registry.add_plugin(bad, "bad")
    good = registry.add_plugin(_Plugin("fine"), "good")
    assert info.status == "failed" and "boom" in info.error
    assert good.status == "loaded" and registry.names("encoder") == ["fine"]


def test_unknown_name_lists_known():
    with pytest.raises(PluginError, match="x2i plugins"):
        get_registry().resolve("encoder", "no-such-encoder")


def test_plugin_module_imports_no_torch(tmp_path):
    code = textwrap.dedent("""
        import sys
        from x2i_core.plugins import get_registry
        reg = get_registry()
        assert reg.plugins, "no plugins"
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "False", out.stderr

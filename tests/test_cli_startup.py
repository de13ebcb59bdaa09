"""`x2i --help` and `x2i plugins` stay fast and torch-free; only the x2i_* import names are installed."""
import os
import subprocess
import sys

CHECK_NO_TORCH = """
import sys
from x2i_cli.main import main
try:
    main({args!r})
except SystemExit as exit:
    code = exit.code
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def _python(code, cwd=None):
    env = {**os.environ, "X2I_PLUGINS": "x2i"}  # the built-ins load (and must import no torch); third-party ones not
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_help_and_plugins_do_not_import_torch():
    for args in (["--help"], ["plugins"], ["generate", "--help"]):
        proc = _python(CHECK_NO_TORCH.format(args=args))
        assert proc.returncode == 0, proc.stderr
        assert "HEAVY:\n" in proc.stderr or proc.stderr.rstrip().endswith("HEAVY:"), (args, proc.stderr[-500:])


def test_generic_top_level_names_are_not_importable(tmp_path):
    code = (
        "import importlib.util as u\n"
        "print(u.find_spec('plugins') is None, u.find_spec('cli') is None)\n"
        "import x2i_plugins, x2i_cli, x2i_plugins.backbones.flux\n"
        "print('ok')\n"
    )
    proc = _python(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "ok"]

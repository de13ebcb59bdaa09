"""Built-in x2i plugins (installed as the package x2i_plugins).

Every sub-package of encoders/, backbones/, aligners/, adapters/ and worlds/ is a plugin of its own, found by
`builtin_plugins()` (the x2i distribution's `x2i.collections` entry point): adding a built-in plugin is
adding a folder. Built-ins use only the public API of x2i_core, like any third-party plugin.
"""
from __future__ import annotations

import pkgutil
from pathlib import Path

FAMILIES = ("encoders", "backbones", "aligners", "adapters", "worlds")


def builtin_plugins() -> list[str]:
    """Module names of the built-in plugins: each package folder under a family folder."""
    root = Path(__file__).resolve().parent
    names = []
    for family in FAMILIES:
        folder = root / family
        if folder.is_dir():
            names += [f"{__name__}.{family}.{m.name}" for m in pkgutil.iter_modules([str(folder)]) if m.ispkg]
    return sorted(names)

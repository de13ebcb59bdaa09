"""Package discovery for the x2i distribution (everything else is in pyproject.toml).

The folders plugins/ and cli/ install as x2i_plugins and x2i_cli, so that no generic top-level module
lands in site-packages. Packages are found by scanning each folder: a new plugin folder needs no edit here.
"""
from setuptools import find_packages, setup

ROOTS = {"x2i_core": "x2i_core", "x2i_plugins": "plugins", "x2i_cli": "cli"}
# files a plugin ships beside its code (weights, configs, tokenizers, templates)
DATA = ["*.json", "*.safetensors", "*.jinja", "*.txt", "**/*.json", "**/*.safetensors", "**/*.jinja", "**/*.txt"]

packages = []
for name, folder in ROOTS.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=ROOTS,
    package_data={name: DATA for name in packages if name.startswith("x2i_plugins.")},
)

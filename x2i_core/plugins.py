"""The plugin manager: built-in plugins plus third-party ones from the entry-point group `x2i`.

Each plugin is imported and asked for its specs inside its own try, so a broken plugin is reported
as failed and the rest keep working. Nothing here imports torch.

Environment variable X2I_PLUGINS restricts third-party plugins: unset = load all; "none" (or empty)
= load none; "a,b" = load only the entry points (or distributions) named a and b.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import json
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .specs import KINDS, ComponentSpec

ENTRY_POINT_GROUP = "x2i"
ENV_VAR = "X2I_PLUGINS"
BUILTIN_PLUGINS: tuple[str, ...] = (
    "x2i_plugins.encoders.qwen25vl",
    "x2i_plugins.backbones.flux",
    "x2i_plugins.worlds.shapes",
)
_REGISTER_HOOKS = {
    "encoder": "register_encoders",
    "backbone": "register_backbones",
    "aligner": "register_aligners",
    "adapter": "register_adapters",
}


@dataclass
class PluginInfo:
    """What `x2i plugins` shows for one plugin."""

    name: str
    distribution: str
    version: str
    builtin: bool
    status: str = "loaded"  # or "failed"
    error: str = ""
    components: list[ComponentSpec] = field(default_factory=list)
    module: Any = None


def _third_party_filter() -> set[str] | None:
    """None = all third-party plugins; an empty set = none."""
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    names = {n.strip() for n in raw.split(",") if n.strip()}
    if names <= {"none", "0", "off"}:
        return set()
    return names


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class Registry:
    """Loaded plugins and the components they registered, by kind and name."""

    def __init__(self):
        self.pm = pluggy.PluginManager("x2i")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, ComponentSpec]] = {k: {} for k in KINDS}

    # -- loading -----------------------------------------------------------------------------
    def add_plugin(
        self,
        obj: Any,
        name: str,
        *,
        distribution: str = "",
        version: str = "",
        builtin: bool = False,
    ) -> PluginInfo:
        """Register a plugin object (a module or any object with hookimpls) and collect its specs."""
        info = PluginInfo(name, distribution, version, builtin, module=obj)
        self.plugins[name] = info
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # a bad hookimpl signature, a duplicate name ...
            info.status, info.error = "failed", _one_line(exc)
            return info
        collected: list[ComponentSpec] = []

        def register(spec: ComponentSpec) -> None:
            if not isinstance(spec, ComponentSpec):
                raise PluginError(f"register() expects a ComponentSpec, got {type(spec).__name__}")
            taken = self.components[spec.kind].get(spec.name)
            if taken is not None:
                raise PluginError(
                    f"{spec.kind} {spec.name!r} is already registered by plugin {taken.plugin!r}"
                )
            collected.append(spec)

        try:
            for hook_name in _REGISTER_HOOKS.values():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is obj:
                        impl.function(**{a: register for a in impl.argnames if a == "register"})
        except Exception as exc:
            info.status, info.error = "failed", _one_line(exc)
            self.pm.unregister(obj)
            return info
        for spec in collected:
            spec = _with_plugin(spec, name)
            self.components[spec.kind][spec.name] = spec
            info.components.append(spec)
        return info

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin and forget its components (tests use this)."""
        info = self.plugins.pop(name, None)
        if info is None:
            return
        for spec in info.components:
            self.components[spec.kind].pop(spec.name, None)
        if info.module is not None and self.pm.is_registered(info.module):
            self.pm.unregister(info.module)

    def load_builtins(self, modules: tuple[str, ...] = BUILTIN_PLUGINS) -> None:
        version = _dist_version("x2i")
        for module_name in modules:
            short = module_name.rsplit(".", 1)[-1]
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:
                self.plugins[short] = PluginInfo(short, "x2i", version, True, "failed", _one_line(exc))
                continue
            self.add_plugin(module, short, distribution="x2i", version=version, builtin=True)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        allowed = _third_party_filter()
        if allowed == set():
            return
        for ep in metadata.entry_points(group=group):
            dist = ep.dist.name if ep.dist is not None else ""
            version = ep.dist.version if ep.dist is not None else ""
            if allowed is not None and ep.name not in allowed and dist not in allowed:
                continue
            if ep.name in self.plugins:
                continue
            try:
                module = ep.load()
            except Exception as exc:
                self.plugins[ep.name] = PluginInfo(ep.name, dist, version, False, "failed", _one_line(exc))
                continue
            self.add_plugin(module, ep.name, distribution=dist, version=version)

    def add_commands(self, cli) -> list[str]:
        """Let plugins add click commands; returns one line per plugin whose hook failed."""
        failures = []
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(**{a: cli for a in impl.argnames if a == "cli"})
            except Exception as exc:
                failures.append(f"plugin {impl.plugin_name!r}: {_one_line(exc)}")
        return failures

    # -- lookup ------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> ComponentSpec:
        try:
            return self.components[kind][name]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            raise PluginError(
                f"unknown {kind} {name!r} (known: {known}); `x2i plugins` lists what is installed"
            ) from None

    def resolve(self, kind: str, name_or_path: str) -> tuple[ComponentSpec, str | None]:
        """A registered name, or a local folder whose config names a model type a plugin loads.

        Returns the spec and the checkpoint to load (the spec's own, or the folder).
        """
        if name_or_path in self.components[kind]:
            spec = self.components[kind][name_or_path]
            return spec, spec.pretrained
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            model_type = folder_model_type(path)
            for spec in self.components[kind].values():
                if model_type and model_type in spec.model_types:
                    return spec, str(path)
            raise PluginError(
                f"no {kind} plugin loads the folder {path} (model type {model_type or 'unknown'}); "
                f"give a registered name and pass the folder as the checkpoint path"
            )
        return self.get(kind, name_or_path), None

    def aligners_for(self, encoder: str, backbone: str) -> list[ComponentSpec]:
        """Registered aligners trained for this encoder and backbone."""
        return [
            s for s in self.components["aligner"].values()
            if s.fits.get("encoder") == encoder and s.fits.get("backbone") in (backbone, None)
        ]


def folder_model_type(path: Path) -> str | None:
    """The model type a checkpoint folder declares (HF `model_type` or diffusers `_class_name`)."""
    for fname in ("model_index.json", "config.json", "transformer/config.json"):
        f = path / fname
        if f.is_file():
            try:
                cfg = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            kind = cfg.get("model_type") or cfg.get("_class_name")
            if kind:
                return kind
    return None


def _with_plugin(spec: ComponentSpec, plugin: str) -> ComponentSpec:
    from dataclasses import replace

    return replace(spec, plugin=plugin)


def _dist_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


_REGISTRY: Registry | None = None


def get_registry(*, reload: bool = False) -> Registry:
    """The process-wide registry, built on first use: built-ins first, then third-party plugins."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        registry = Registry()
        registry.load_builtins()
        registry.load_entry_points()
        _REGISTRY = registry
    return _REGISTRY


def load_component(kind: str, name: str, pretrained: str | None = None, **options):
    """Build a registered component: `factory.from_pretrained(pretrained, **spec.options, **options)`."""
    spec, default = get_registry().resolve(kind, name)
    checkpoint = pretrained or default
    if checkpoint is None:
        raise PluginError(f"{kind} {spec.name!r} has no default checkpoint; give a hub id or folder")
    try:
        factory = spec.load_factory()
    except Exception as exc:
        raise PluginError(f"plugin {spec.plugin!r} cannot load {kind} {spec.name!r}: {_one_line(exc)}") from exc
    return factory.from_pretrained(checkpoint, **{**spec.options, **options})


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))

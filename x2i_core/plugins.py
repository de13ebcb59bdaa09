"""The plugin manager: every plugin, built-in or third-party, is found through entry points.

- group `x2i`: each entry point is one plugin module (what a third-party distribution declares);
- group `x2i.collections`: each entry point is a function returning plugin module names, each loaded as
  a plugin of its own (x2i's built-ins: every folder under plugins/, found by scanning, so a new built-in
  plugin is a new folder and no list to edit). The core itself names no plugin.

Each plugin is imported and asked for its specs inside its own try, so a broken plugin is reported
as failed and the rest keep working. Nothing here imports torch.

Environment variable X2I_PLUGINS chooses what loads: unset = everything installed; "none" (or empty)
= nothing; "a,b" = only the plugins or distributions named a and b ("x2i" = the built-ins, so
X2I_PLUGINS=x2i switches every third-party plugin off and X2I_PLUGINS=none the built-ins too).
Environment variable X2I_DEFAULT_WORLD names the world `x2i generate` uses when no model is named.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import json
import os
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .specs import KINDS, ComponentSpec, WorldSpec

ENTRY_POINT_GROUP = "x2i"
COLLECTION_GROUP = "x2i.collections"
ENV_VAR = "X2I_PLUGINS"
WORLD_ENV_VAR = "X2I_DEFAULT_WORLD"
CORE_DISTRIBUTION = "x2i"  # plugins of this distribution are the built-ins
_HOOK_NAMES = ("register_encoders", "register_backbones", "register_aligners", "register_adapters",
               "register_worlds", "register_commands")
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
    worlds: list[WorldSpec] = field(default_factory=list)
    module: Any = None


def plugin_filter() -> set[str] | None:
    """What X2I_PLUGINS allows: None = everything; an empty set = nothing; else plugin/distribution names."""
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
        self.worlds: dict[str, WorldSpec] = {}

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
        unknown = sorted(c.name for c in self.pm.get_hookcallers(obj) or () if not c.has_spec())
        if unknown:  # a misspelt hook would silently do nothing: fail the plugin instead
            self.pm.unregister(obj)
            info.status = "failed"
            info.error = f"implements unknown hook(s) {', '.join(unknown)} (known: {', '.join(_HOOK_NAMES)})"
            return info
        collected: list[ComponentSpec] = []
        worlds: list[WorldSpec] = []

        def register(spec: ComponentSpec) -> None:
            if not isinstance(spec, ComponentSpec):
                raise PluginError(f"register() expects a ComponentSpec, got {type(spec).__name__}")
            taken = self.components[spec.kind].get(spec.name)
            if taken is not None or any(s.kind == spec.kind and s.name == spec.name for s in collected):
                owner = taken.plugin if taken is not None else name
                raise PluginError(f"{spec.kind} {spec.name!r} is already registered by plugin {owner!r}")
            collected.append(spec)

        def register_world(world: WorldSpec) -> None:
            if not isinstance(world, WorldSpec):
                raise PluginError(f"register() of register_worlds expects a WorldSpec, got {type(world).__name__}")
            taken = self.worlds.get(world.name)
            if taken is not None:
                raise PluginError(f"world {world.name!r} is already registered by plugin {taken.plugin!r}")
            worlds.append(world)

        try:
            for hook_name in (*_REGISTER_HOOKS.values(), "register_worlds"):
                callback = register_world if hook_name == "register_worlds" else register
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is obj:
                        impl.function(**{a: callback for a in impl.argnames if a == "register"})
        except Exception as exc:
            info.status, info.error = "failed", _one_line(exc)
            self.pm.unregister(obj)
            return info
        for spec in collected:
            spec = replace(spec, plugin=name)
            self.components[spec.kind][spec.name] = spec
            info.components.append(spec)
        for world in worlds:
            world = replace(world, plugin=name)
            self.worlds[world.name] = world
            info.worlds.append(world)
        return info

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin and forget its components (tests use this)."""
        info = self.plugins.pop(name, None)
        if info is None:
            return
        for spec in info.components:
            self.components[spec.kind].pop(spec.name, None)
        for world in info.worlds:
            self.worlds.pop(world.name, None)
        if info.module is not None and self.pm.is_registered(info.module):
            self.pm.unregister(info.module)

    def load_module(self, module_name: str, name: str, *, distribution: str = "", version: str = "") -> PluginInfo:
        """Import a plugin module by name and register it; an import error marks it failed."""
        builtin = distribution == CORE_DISTRIBUTION
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            info = PluginInfo(name, distribution, version, builtin, "failed", _one_line(exc))
            self.plugins[name] = info
            return info
        return self.add_plugin(module, name, distribution=distribution, version=version, builtin=builtin)

    def load_installed(self, allowed: set[str] | None = None, *, only: str | None = None) -> None:
        """Load every installed plugin that `allowed` (names or distributions; None = all) lets through.

        The core distribution's plugins load first, so a third-party plugin cannot take a built-in name.
        `only`: load just this distribution's plugins.
        """
        for name, dist, version, target in _installed_plugins():
            if only is not None and dist != only:
                continue
            if allowed is not None and name not in allowed and dist not in allowed:
                continue
            if name in self.plugins:
                continue
            if callable(target):  # an entry point that failed to load, reported as that plugin
                self.plugins[name] = PluginInfo(name, dist, version, dist == CORE_DISTRIBUTION, "failed", target())
                continue
            self.load_module(target, name, distribution=dist, version=version)

    def load_builtins(self) -> None:
        """Load only x2i's own plugins (tests build registries this way)."""
        self.load_installed(only=CORE_DISTRIBUTION)

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

    def default_world(self) -> WorldSpec | None:
        """The world `x2i generate` uses when no model is named: X2I_DEFAULT_WORLD if set; else a third-party
        plugin's world (installing one is a choice), first by plugin name; else a built-in one; else None."""
        wanted = os.environ.get(WORLD_ENV_VAR, "").strip()
        if wanted:
            if wanted not in self.worlds:
                known = ", ".join(sorted(self.worlds)) or "none"
                raise PluginError(f"{WORLD_ENV_VAR}={wanted} names no registered world (known: {known})")
            return self.worlds[wanted]
        builtin = {n for n, p in self.plugins.items() if p.builtin}
        ranked = sorted(self.worlds.values(), key=lambda w: (w.plugin in builtin, w.plugin, w.name))
        return ranked[0] if ranked else None

    def aligners_for(self, encoder: str, backbone: str) -> list[ComponentSpec]:
        """Registered aligners for this encoder: those aligned on this backbone first, then those aligned on another
        preset of the same backbone family (same factory: an AlignNet aligned on FLUX.1-dev serves schnell too)."""
        def family(name: str | None) -> str | None:
            spec = self.components["backbone"].get(name or "")
            return spec.factory if spec is not None else None

        mine = [s for s in self.components["aligner"].values() if s.fits.get("encoder") == encoder]
        exact = [s for s in mine if s.fits.get("backbone") in (backbone, None)]
        related = [s for s in mine if s not in exact and family(s.fits.get("backbone")) is not None
                   and family(s.fits.get("backbone")) == family(backbone)]
        return exact + related


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


def _installed_plugins() -> list[tuple[str, str, str, Any]]:
    """(plugin name, distribution, version, module name) of every installed plugin, the core's first.

    A collection entry point that cannot be loaded yields a callable giving its error, so that it is
    reported as a failed plugin instead of stopping the others.
    """
    found = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist, version = (ep.dist.name, ep.dist.version) if ep.dist is not None else ("", "")
        found.append((ep.name, dist, version, ep.value.partition(":")[0]))
    for ep in metadata.entry_points(group=COLLECTION_GROUP):
        dist, version = (ep.dist.name, ep.dist.version) if ep.dist is not None else ("", "")
        try:
            modules = list(ep.load()())
        except Exception as exc:
            message = _one_line(exc)
            found.append((ep.name, dist, version, lambda message=message: message))
            continue
        found += [(m.rsplit(".", 1)[-1], dist, version, m) for m in modules]
    # the core distribution first; then by distribution and name, so collisions resolve the same way each run
    return sorted(found, key=lambda f: (f[1] != CORE_DISTRIBUTION, f[1], f[0]))


_REGISTRY: Registry | None = None


def get_registry(*, reload: bool = False) -> Registry:
    """The process-wide registry, built on first use: built-ins first, then third-party plugins."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        registry = Registry()
        registry.load_installed(plugin_filter())
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

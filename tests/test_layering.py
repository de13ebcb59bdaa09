"""The layering rules, read from the source: the core imports no plugin and no CLI, plugins import only the
public API of x2i_core (its exported names and x2i_core.testing), the core has no import cycle, and no
component member is reached through getattr/hasattr in the core or the CLI."""
import ast
from pathlib import Path

import x2i_core

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = {"x2i_core", "x2i_core.testing"}


def _python_files(folder):
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path, folder: str, package: str) -> str:
    rel = path.relative_to(ROOT / folder).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str):
    """(imported module, [names]) for every import in the file, function-level ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield target, [a.name for a in node.names]


def test_core_imports_no_plugin_and_no_cli():
    bad = []
    for path in _python_files("x2i_core"):
        module = _module_name(path, "x2i_core", "x2i_core")
        for target, _ in _imports(path, module):
            if target.split(".")[0] in ("x2i_plugins", "x2i_cli", "plugins", "cli"):
                bad.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not bad, bad


def test_plugins_use_only_the_public_api():
    """Built-in plugins and the shapes world's lab (a plugin distribution of its own) import x2i_core's public
    names only, no private name of another plugin, and never the CLI."""
    public = set(x2i_core.__all__)
    bad = []
    sources = [(p, "plugins", "x2i_plugins") for p in _python_files("plugins")]
    sources += [(p, "shapes_lab/x2i_shapes_lab", "x2i_shapes_lab") for p in _python_files("shapes_lab/x2i_shapes_lab")]
    assert any(package == "x2i_shapes_lab" for _, _, package in sources)
    for path, folder, package in sources:
        module = _module_name(path, folder, package)
        own = ".".join(module.split(".")[:3]) if package == "x2i_plugins" else package  # x2i_plugins.<family>.<plugin>
        for target, names in _imports(path, module):
            if target.startswith("x2i_core"):
                if target not in PUBLIC_MODULES:
                    bad.append(f"{path.relative_to(ROOT)} imports the internal module {target}")
                elif target == "x2i_core":
                    bad += [f"{path.relative_to(ROOT)} imports x2i_core.{n}, not exported" for n in names if n not in public]
            elif target.startswith("x2i_plugins.") and target.count(".") >= 2 and not target.startswith(own):
                # another plugin: public names of its modules only
                bad += [f"{path.relative_to(ROOT)} imports the private {target}.{n}" for n in names if n.startswith("_")]
                if any(part.startswith("_") for part in target.split(".")):
                    bad.append(f"{path.relative_to(ROOT)} imports the private module {target}")
            elif target.startswith("x2i_cli"):
                bad.append(f"{path.relative_to(ROOT)} imports the CLI ({target})")
    assert not bad, bad


def test_every_exported_name_resolves():
    for name in x2i_core.__all__:
        assert getattr(x2i_core, name) is not None, name


def test_core_has_no_import_cycle():
    graph = {}
    for path in _python_files("x2i_core"):
        module = _module_name(path, "x2i_core", "x2i_core")
        deps = set()
        for target, names in _imports(path, module):
            if not target.startswith("x2i_core"):
                continue
            # `from . import checkpoint` imports a submodule; `from .x import name` imports module x
            subs = {f"{target}.{n}" for n in names}
            deps |= {s for s in subs if s in _all_modules()} or {target}
        graph[module] = {d for d in deps if d != module and d in _all_modules() and d != "x2i_core"}
    # x2i_core itself is the lazy facade: it imports only errors/hookspecs/prompt/specs eagerly
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep.startswith(node + ".") and node.endswith("__init__"):
                continue
            visit(dep)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    # a package's __init__ that re-exports its submodules is not a cycle with them
    real = [c for c in cycles if not any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(c, c[1:]))]
    assert not real, real


_MODULES = None


def _all_modules():
    global _MODULES
    if _MODULES is None:
        _MODULES = {_module_name(p, "x2i_core", "x2i_core") for p in _python_files("x2i_core")}
    return _MODULES


def test_no_component_member_is_probed_with_getattr():
    """getattr/hasattr on a backbone, encoder or aligner means an undeclared member: declare it instead."""
    bad = []
    for folder in ("x2i_core", "cli"):
        for path in _python_files(folder):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
                    first = node.args[0] if node.args else None
                    text = ast.unparse(first) if first is not None else ""
                    if any(word in text for word in ("backbone", "encoder", "aligner", "adapter")):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, bad

"""`x2i plugins`: installed plugins and what each registered. Imports no torch."""
from __future__ import annotations

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def plugins(as_json):
    """List plugins (name, distribution, version, loaded or failed) and the encoders (with the modalities
    each reads), backbones, aligners, adapters and worlds each registered; the default world is marked.

    \b
    X2I_PLUGINS=x2i x2i plugins      only the built-ins
    X2I_PLUGINS=none x2i plugins     nothing (built-ins off too)
    """
    from x2i_core.plugins import get_registry

    registry = get_registry()
    default = registry.default_world()
    if as_json:
        import json

        out = [
            {
                "name": p.name, "distribution": p.distribution, "version": p.version,
                "builtin": p.builtin, "status": p.status, "error": p.error,
                "components": [
                    {"kind": c.kind, "name": c.name, "summary": c.summary, "pretrained": c.pretrained,
                     "modalities": list(c.modalities)}
                    for c in p.components
                ],
                "worlds": [{"name": w.name, "encoder": w.encoder, "backbone": w.backbone, "aligner": w.aligner,
                            "default": default is not None and w.name == default.name} for w in p.worlds],
            }
            for p in registry.plugins.values()
        ]
        click.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="x2i plugins")
    for col in ("plugin", "distribution", "version", "status", "registered"):
        table.add_column(col)
    for p in registry.plugins.values():
        status = "[green]loaded[/]" if p.status == "loaded" else f"[red]failed[/]: {p.error}"
        registered = "\n".join([f"{c.kind}: {c.name}" for c in p.components]
                               + [f"world: {w.name}" for w in p.worlds]) or "-"
        table.add_row(p.name, p.distribution or "-", p.version or "-", status, registered)
    console.print(table)
    for kind in ("encoder", "backbone", "aligner", "adapter"):
        specs = [registry.components[kind][n] for n in registry.names(kind)]
        if not specs:
            continue
        t = Table(title=f"{kind}s", show_lines=False)
        columns = ("name", "reads", "summary", "checkpoint") if kind == "encoder" else ("name", "summary", "checkpoint")
        for col in columns:
            t.add_column(col)
        for s in specs:
            row = [s.name, s.summary, s.pretrained or "(give one)"]
            if kind == "encoder":
                row.insert(1, ", ".join(s.modalities) or "-")
            t.add_row(*row)
        console.print(t)
    if registry.worlds:
        t = Table(title="worlds (what `x2i generate` uses when no model is named)")
        for col in ("name", "encoder", "backbone", "aligner", "default"):
            t.add_column(col)
        for w in registry.worlds.values():
            t.add_row(w.name, w.encoder, w.backbone, w.aligner, "yes" if default and w.name == default.name else "")
        console.print(t)

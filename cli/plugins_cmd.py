"""`x2i plugins`: installed plugins and what each registered. Imports no torch."""
from __future__ import annotations

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def plugins(as_json):
    """List plugins (name, distribution, version, loaded or failed) and the encoders, backbones,
    aligners and adapters each registered."""
    from x2i_core.plugins import get_registry

    registry = get_registry()
    if as_json:
        import json

        out = [
            {
                "name": p.name, "distribution": p.distribution, "version": p.version,
                "builtin": p.builtin, "status": p.status, "error": p.error,
                "components": [
                    {"kind": c.kind, "name": c.name, "summary": c.summary, "pretrained": c.pretrained}
                    for c in p.components
                ],
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
        registered = "\n".join(f"{c.kind}: {c.name}" for c in p.components) or "-"
        table.add_row(p.name, p.distribution or "-", p.version or "-", status, registered)
    console.print(table)
    for kind in ("encoder", "backbone", "aligner", "adapter"):
        specs = [registry.components[kind][n] for n in registry.names(kind)]
        if not specs:
            continue
        t = Table(title=f"{kind}s", show_lines=False)
        for col in ("name", "summary", "checkpoint"):
            t.add_column(col)
        for s in specs:
            t.add_row(s.name, s.summary, s.pretrained or "(give one)")
        console.print(t)

"""`x2i fetch-aligner`: prepare an official AlignNet ahead of use (from the hub, or from a file copied by hand)."""
from __future__ import annotations

import click

from x2i_core.errors import PluginError


@click.command(epilog="""\\b
Examples:
  x2i fetch-aligner x2i-qwen2.5-vl-7b                       download and convert once
  x2i fetch-aligner x2i-qwen2.5-vl-7b --from ./qwen2.5-vl-7b_proj.pt   air-gapped: a file copied by hand
  x2i plugins                                               lists the official aligners
""")
@click.argument("name")
@click.option("--from", "source", metavar="FILE", type=click.Path(dir_okay=False),
              help="The released file, copied by hand (no network needed); read with weights_only=True.")
def fetch_aligner(name, source):
    """Download (or take from --from FILE) the official AlignNet NAME and convert it into x2i's cache, so that
    `x2i generate` finds it without network. Prints the folder."""
    from x2i_core.plugins import get_registry

    spec = get_registry().get("aligner", name)
    if spec.factory != "x2i_core:OfficialAligner":
        raise PluginError(f"{name!r} is not an official aligner (it loads from {spec.pretrained or 'a folder'}); "
                          f"nothing to fetch")
    from x2i_core.official import prepare

    options = spec.options
    folder = prepare(name, spec.pretrained, options["filename"], revision=options.get("revision"),
                     sha256=options.get("sha256"), encoder=options.get("encoder"), backbone=options.get("backbone"),
                     source=source)
    click.echo(str(folder))

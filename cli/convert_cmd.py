"""`x2i convert`: reference X2I AlignNet checkpoints -> AlignNet folders."""
from __future__ import annotations

import click


@click.command()
@click.argument("source", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Folder to write (config.json + safetensors).")
@click.option("--encoder", default=None, help="Encoder name the AlignNet was trained for (recorded in its config).")
@click.option("--backbone", default=None, help="Backbone name the AlignNet was trained for (recorded in its config).")
@click.option(
    "--masked-pool/--unmasked-pool", default=False, show_default=True,
    help="Average the pooled embedding over real tokens only. The reference averaged over padding too, "
    "and its released weights expect that, so the default keeps its behaviour.",
)
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Dtype of the written weights (loading casts them to the run's dtype anyway).")
def convert(source, output, encoder, backbone, masked_pool, dtype):
    """Convert a reference X2I AlignNet checkpoint (SOURCE: diffusion_pytorch_model.bin, a *_proj.pt
    hub file, or a folder holding one) into an x2i AlignNet folder. Pickles are read with
    weights_only=True: nothing but tensors is ever unpickled."""
    from x2i_core.convert import convert_reference
    from x2i_core.device import resolve

    _, torch_dtype = resolve("cpu", dtype)
    out = convert_reference(source, output, masked_pool=masked_pool, encoder=encoder, backbone=backbone, dtype=torch_dtype)
    click.echo(f"wrote AlignNet folder {out}")

"""`x2i ui`: a web page for generating and chatting (Gradio, the optional extra `x2i[ui]`). No torch at import."""
from __future__ import annotations

import tempfile

import click

from x2i_core.errors import X2IError

_EPILOG = """\b
Examples:
  x2i ui                                  the default world, on http://127.0.0.1:7860
  x2i ui --encoder qwen2.5-vl-7b --backbone flux-dev --aligner DIR --port 8000 --output-dir outputs/
\b
The page: a prompt with image, video and audio uploads (or the microphone), model choice, LoRA / ControlNet /
img2img adapters, seed, steps and size, a gallery of PNGs that carry their metadata, and a chat tab.
It listens on the loopback address unless --host says otherwise.
"""


@click.command(epilog=_EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to listen on.")
@click.option("--output-dir", metavar="DIR", help="Where the images are saved (default: a new temporary folder).")
@click.option("--encoder", metavar="NAME|DIR", help="Encoder preselected on the page (default: the default world's).")
@click.option("--encoder-path", metavar="DIR|HUB_ID", help="Its checkpoint, overriding the name's default.")
@click.option("--backbone", metavar="NAME|DIR", help="Backbone preselected on the page.")
@click.option("--backbone-path", metavar="DIR|HUB_ID", help="Its checkpoint, overriding the name's default.")
@click.option("--aligner", metavar="NAME|DIR|HUB_ID", help="AlignNet preselected on the page.")
@click.option("--steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Steps pre-filled on the page (0 = the backbone's default).")
@click.option("--device", metavar="DEVICE", help="cuda, cuda:1, cpu ... (default: cuda if available).")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]),
              help="Weights dtype (default: bf16 on GPU, fp32 on CPU).")
def ui(host, port, output_dir, encoder, encoder_path, backbone, backbone_path, aligner, steps, device, dtype):
    """Open a web page to generate images from any prompt, and to chat."""
    try:
        from x2i_cli.ui_app import build_app
    except ImportError as exc:
        if "gradio" not in str(exc):
            raise
        raise X2IError("the web UI needs Gradio: pip install 'x2i[ui]'") from exc
    from x2i_cli.quiet import quiet_libraries
    from x2i_cli.ui_runner import Models, UIRunner

    quiet_libraries()
    out = output_dir or tempfile.mkdtemp(prefix="x2i-ui-")
    runner = UIRunner(out, device=device, dtype=dtype, defaults=Models(encoder or "", backbone or "", aligner or "",
                                                                       encoder_path or "", backbone_path or ""))
    click.echo(f"Images are saved in {runner.output_dir}", err=True)
    app = build_app(runner, steps=steps)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, allowed_paths=[str(runner.output_dir)], share=False,
               show_error=True, footer_links=[])

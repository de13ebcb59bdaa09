"""`x2i chat`: a multi-turn session on stdin; each turn the MLLM answers and an image is drawn from the dialogue."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from x2i_core.errors import X2IError

HELP = """\
Type a message and press Enter: the model answers, and an image conditioned on the whole dialogue so far
(earlier messages and answers, this message and its answer) is saved as turn-N.png in the output folder.
  /image FILE   /video FILE   /audio FILE   attach a file to your next message (repeat for several)
  /again        draw the last turn again with a new seed (turn-N-K.png)
  /save DIR     write the dialogue (dialogue.json, chat messages that --prompt-file reads) and its images
  /help         this text
  /quit         end the session (so does end of input)"""

_EPILOG = """\b
Examples:
  x2i chat -o session/                               the built-in default world
  x2i chat --encoder qwen2.5-omni-7b --backbone flux-dev --aligner DIR -o session/
  printf 'a red circle\\n/again\\nnow make it blue\\n/quit\\n' | x2i chat -o session/
"""


@click.command(epilog=_EPILOG)
@click.option("--encoder", metavar="NAME|DIR", help="Multimodal encoder that can answer (see `x2i plugins`).")
@click.option("--encoder-path", metavar="DIR|HUB_ID", help="Checkpoint for the encoder, overriding the name's default.")
@click.option("--backbone", metavar="NAME|DIR", help="Image backbone: flux-dev, flux-schnell, flux (+ --backbone-path) ...")
@click.option("--backbone-path", metavar="DIR|HUB_ID", help="Checkpoint for the backbone, overriding the name's default.")
@click.option("--aligner", metavar="NAME|DIR|HUB_ID", help="AlignNet trained for this encoder and backbone.")
@click.option("-o", "--output", metavar="DIR", default="x2i-chat", show_default=True,
              help="Folder for the turns' images (turn-1.png, turn-2.png ...).")
@click.option("--answer-tokens", type=click.IntRange(min=1), default=64, show_default=True,
              help="Cap on each answer's tokens (the reference's multi-turn mode uses 64).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first image; each drawing uses the next.")
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps (default: the backbone's).")
@click.option("--guidance", type=float, help="Guidance scale (default: the backbone's).")
@click.option("--true-cfg", type=float, help="Classifier-free guidance scale; 1 = off (default: the backbone's).")
@click.option("--width", type=click.IntRange(min=1), help="Image width in pixels (default: the backbone's).")
@click.option("--height", type=click.IntRange(min=1), help="Image height in pixels (default: the backbone's).")
@click.option("--device", metavar="DEVICE", help="cuda, cuda:1, cpu ... (default: cuda if available).")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]), help="Weights dtype (default: bf16 on GPU, fp32 on CPU).")
@click.option("--video-sound", is_flag=True, help="Read attached videos' own sound tracks too (e.g. qwen2.5-omni).")
def chat(encoder, encoder_path, backbone, backbone_path, aligner, output, answer_tokens, seed, steps, guidance,
         true_cfg, width, height, device, dtype, video_sound):
    """Talk with the multimodal encoder; every answer also becomes an image, conditioned on the dialogue so far.

    Reads one message per line from the terminal or a pipe; /help lists the commands."""
    from x2i_cli.generate import _pick_models

    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise X2IError(f"the output must be a folder, got the file {out}")
    picked = _pick_models(encoder, backbone, aligner, encoder_path, backbone_path)
    encoder, backbone, aligner, encoder_path, backbone_path, world = picked[:6]
    if world is not None:
        click.echo(world.message or f"Using the default world {world.name!r}.", err=True)
    for note in picked[6:]:
        if note:
            click.echo(note, err=True)

    from x2i_cli.quiet import quiet_libraries
    from x2i_core.chat import ChatSession
    from x2i_core.generate import X2IPipeline

    quiet_libraries()
    pipe = X2IPipeline.from_names(encoder, backbone, aligner, encoder_path=encoder_path, backbone_path=backbone_path,
                                  device=device, dtype=dtype,
                                  encoder_options={"use_audio_in_video": True} if video_sound else None)
    options = {k: v for k, v in (("steps", steps), ("guidance", guidance), ("true_cfg", true_cfg), ("width", width),
                                 ("height", height)) if v is not None}
    session = ChatSession(pipe, seed=seed, answer_tokens=answer_tokens, **options)
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo(HELP, err=True)
    _loop(session, out, interactive)


def _loop(session, out: Path, interactive: bool) -> None:
    """Read lines until /quit or end of input; a bad line prints one error line and the session goes on."""
    attached: list[tuple[str, str]] = []
    while True:
        if interactive:
            click.echo("> ", nl=False, err=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        command, _, argument = line.partition(" ") if line.startswith("/") else ("", "", line)
        try:
            if command == "/quit":
                break
            if command == "/help":
                click.echo(HELP, err=True)
            elif command in ("/image", "/video", "/audio"):
                attached.append(_attachment(command[1:], argument.strip()))
                click.echo(f"attached {command[1:]} {attached[-1][1]}", err=True)
            elif command == "/again":
                answer, images = session.again()
                turn, redraw = len(session.turns), len(session.turns[-1].images) - len(images)
                _show(answer, images, out, turn, redraw)
            elif command == "/save":
                if not argument.strip():
                    raise X2IError("/save needs a folder: /save DIR")
                paths = session.save(argument.strip())
                click.echo(f"saved {paths[0]} and {len(paths) - 1} image(s)")
            elif command:
                raise X2IError(f"unknown command {command}; /help lists the commands")
            else:
                answer, images = session.send(argument, media=attached)
                attached = []
                _show(answer, images, out, len(session.turns), 0)
        except X2IError as exc:  # one line, then the next message: a typo should not end the dialogue
            click.echo(f"Error: {exc}", err=True)


def _attachment(modality: str, path: str) -> tuple[str, str]:
    if not path:
        raise X2IError(f"/{modality} needs a file: /{modality} FILE")
    file = Path(path).expanduser()
    if not file.is_file():
        raise X2IError(f"{modality} file not found: {file}")
    return modality, str(file)


def _show(answer: str, images, out: Path, turn: int, redraw: int) -> None:
    """Print the answer and save the turn's image(s) as turn-N.png (turn-N-K.png for redraws)."""
    from x2i_core.chat import turn_image_name
    from x2i_core.generate import save_images

    click.echo(f"answer: {answer}")
    for k, image in enumerate(images):
        for path in save_images([image], out / turn_image_name(turn, redraw + k)):
            click.echo(f"image: {path}")

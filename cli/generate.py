"""`x2i generate`: a prompt (text, images, videos, audio clips) -> PNG images. Torch loads inside the command only."""
from __future__ import annotations

import click

from x2i_cli.adapter_inputs import adapter_inputs, adapter_options, backbone_options, check_against_backbone
from x2i_cli.dit_inputs import dit_inputs, dit_options
from x2i_core.errors import X2IError
from x2i_core.memory import MEMORY_LEVELS

_EPILOG = """\b
Examples:
  x2i generate --encoder qwen2.5-vl-7b --backbone flux-dev --aligner ./alignnet "a red fox in snow"
  x2i generate ... "一只在雪地里的红狐狸"                     any language the encoder reads
  x2i generate ... --image dog.png "the dog as an oil painting"
  x2i generate ... --image a.png --image b.png "both animals on one sofa"
  x2i generate ... --video clip.mp4 -o frames/ --num-images 4
  x2i generate --encoder qwen2.5-vl-7b --backbone flux --backbone-path ./my-flux ...
\b
Media come first (images, videos, audio clips, in the order given), then the text.
Inline references keep their place in TEXT: "a cat like <image:dog.png> in the style of <image:art.jpg>"
(<video:FILE>, <audio:FILE> too); --prompt-file reads a chat-message JSON dialogue (docs/encoders.md).
Image i is seeded with SEED + i, so any single image can be reproduced with --num-images 1.
The prompt, seed, steps, guidance, size and model names are stored in each PNG's text chunks.
An AlignNet made by `x2i align` records its encoder and backbone: --aligner DIR alone is enough.
Limits, checked before anything loads: sides up to 4096 px, up to 64 images and 64 megapixels per call,
up to 1000 steps, prompts up to 10000 characters; then an estimate of the working memory against the free
memory of the device (X2I_MEMORY_CHECK=off skips the estimate).
"""


def _pick_models(encoder, backbone, aligner, encoder_path, backbone_path):
    """Fill missing model options: from what the AlignNet records; else, when no model option was given, from the
    default world a plugin offers; else say which options to pass.

    Returns the five values, the world used (None when the user or the AlignNet named the models) and a note line
    (None unless an option given explicitly differs from what the AlignNet records)."""
    from x2i_core.aligner_record import fill_models, read_record
    from x2i_core.plugins import get_registry

    given = {"encoder": encoder, "encoder_path": encoder_path, "backbone": backbone, "backbone_path": backbone_path}
    chosen, note = fill_models(read_record(aligner), given)
    if chosen["encoder"] and chosen["backbone"]:
        return chosen["encoder"], chosen["backbone"], aligner, chosen["encoder_path"], chosen["backbone_path"], None, note
    # the default world only when neither the options nor the AlignNet name a model (half a record is not a world's)
    world = None if (chosen["encoder"] or chosen["backbone"]) else get_registry().default_world()
    if world is not None:
        return world.encoder, world.backbone, aligner or world.aligner, encoder_path, backbone_path, world, None
    missing = [opt for opt, val in (("--encoder", chosen["encoder"]), ("--backbone", chosen["backbone"])) if not val]
    if chosen["encoder"] or chosen["backbone"]:
        raise X2IError(f"no {missing[0][2:]} is named, by an option or by the AlignNet's record: pass {missing[0]}")
    raise X2IError(
        f"no default model is installed: pass {' and '.join(missing)} (and --aligner), for example "
        f"--encoder qwen2.5-vl-7b --backbone flux-dev --aligner DIR; `x2i plugins` lists what is installed"
    )


def _world_edit_adapters(world, prompt, adapters: list, dit_fields: dict) -> list:
    """The world's edit adapters (its LightControl branch ...) for an image + text prompt given no adapter or DiT
    image option; said in one line."""
    kinds = {part.modality for part in prompt.parts}
    if adapters or dit_fields or not world.edit_adapters or kinds != {"image", "text"}:
        return adapters
    from x2i_core.request import AdapterChoice

    chosen = [AdapterChoice(name, str(folder), float(scale)) for name, folder, scale in world.edit_adapters]
    click.echo(f"An edit: the world's {', '.join(c.name for c in chosen)} is used (any adapter option replaces it).",
               err=True)
    return chosen


@click.command(epilog=_EPILOG)
@click.argument("text", required=False)
@click.option("--encoder", metavar="NAME|DIR",
              help="Multimodal encoder: a registered name (see `x2i plugins`) or a model folder.")
@click.option("--encoder-path", metavar="DIR|HUB_ID", help="Checkpoint for the encoder, overriding the name's default.")
@click.option("--backbone", metavar="NAME|DIR",
              help="Image backbone: flux-dev, flux-schnell, shuttle, shuttle-3.1-aesthetic, flux-turbo, flex, flux-fill, "
                   "flux-kontext, flux (+ --backbone-path) or a folder; `x2i plugins` lists them.")
@click.option("--backbone-path", metavar="DIR|HUB_ID", help="Checkpoint for the backbone, overriding the name's default.")
@click.option("--aligner", metavar="NAME|DIR|HUB_ID",
              help="AlignNet trained for this encoder and backbone (default: the registered one that fits); the "
                   "encoder and backbone it records are the defaults of --encoder and --backbone.")
@click.option("--image", "images", multiple=True, metavar="FILE", help="An input image; repeat for several.")
@click.option("--video", "videos", multiple=True, metavar="FILE", help="An input video; repeat for several.")
@click.option("--audio", "audios", multiple=True, metavar="FILE", help="An input audio clip; repeat for several.")
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps (default: the backbone's, e.g. 28 for flux-dev).")
@click.option("--guidance", type=float, help="Guidance scale (default: the backbone's, e.g. 3.5 for flux-dev).")
@click.option("--true-cfg", type=float, help="Classifier-free guidance scale against --negative-prompt; 1 = off "
              "(default: the backbone's; the shapes world uses 3). Doubles the transformer calls.")
@click.option("--negative-prompt", default="", show_default=True, help="What --true-cfg guides away from.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the first image.")
@click.option("--width", type=click.IntRange(min=1), help="Image width in pixels (default: the backbone's, 1024 for FLUX).")
@click.option("--height", type=click.IntRange(min=1), help="Image height in pixels (default: the backbone's).")
@click.option("--num-images", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images to make from this prompt.")
@click.option("-o", "--output", metavar="FILE.png|DIR",
              help="A .png file (several images: NAME-0.png, NAME-1.png ...) or a folder. Default: x2i.png.")
@click.option("--offload", is_flag=True, help="Low memory: keep models on the CPU and move each to the GPU when it runs "
              "(= --memory balanced).")
@click.option("--memory", type=click.Choice(MEMORY_LEVELS, case_sensitive=False),
              help="GPU memory level: high (all resident), balanced (model offload), low (+ fp8 transformer, VAE "
                   "tiling), lowest (group offload). docs/performance.md has the table.")
@click.option("--device", metavar="DEVICE", help="cuda, cuda:1, cpu ... (default: cuda if available).")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]), help="Weights dtype (default: bf16 on GPU, fp32 on CPU).")
@click.option("--trust-remote-code", is_flag=True, help="Allow encoders that run code from their checkpoint (e.g. MiniCPM-o).")
@click.option("--prompt-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="The prompt from a file instead of TEXT and media options: chat-message JSON (a list of {\"role\", "
                   "\"content\": [{\"type\": \"text\", \"text\": ...}, {\"type\": \"image\", \"image\": PATH} ...]}, "
                   "the last one the user's; paths relative to the file), or text with inline <image:FILE> references.")
@click.option("--batch", metavar="FILE.jsonl", type=click.Path(dir_okay=False),
              help="Many prompts, models loaded once: one JSON object a line, {\"prompt\": TEXT} or {\"messages\": "
                   "[chat messages]}, optional \"id\" and per-line seed, num_images, steps, guidance, true_cfg, "
                   "negative_prompt, width, height, reason; -o DIR. Rerun to resume (finished lines are skipped); under "
                   "`accelerate launch` or `torchrun` the lines are split across processes (docs/batch.md).")
@click.option("--reason", is_flag=True, help="The encoder answers the prompt first (greedy) and its answer conditions "
              "the image; the answer is printed and stored in the PNG (needs an encoder that can generate).")
@click.option("--reason-tokens", type=click.IntRange(min=1), default=128, show_default=True,
              help="With --reason: the cap on the answer's tokens.")
@click.option("--reason-with-prompt", is_flag=True, help="With --reason: the prompt's hidden states too, before the answer's.")
@click.option("--video-sound", is_flag=True, help="Read each video's own sound track too (encoders that hear, "
              "e.g. qwen2.5-omni); a video without one is an error.")
@dit_options
@adapter_options
def generate(text, encoder, encoder_path, backbone, backbone_path, aligner, images, videos, audios, steps, guidance,
             true_cfg, negative_prompt, seed, width, height, num_images, output, offload, memory, device, dtype, trust_remote_code,
             prompt_file=None, reason=False, reason_tokens=128, reason_with_prompt=False, video_sound=False, batch=None,
             **dit):
    """Generate images from TEXT and/or media with a multimodal encoder, an AlignNet and a FLUX-style backbone."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from x2i_core.generate import check_media_files, output_paths
    from x2i_core.limits import check_generation, prompt_text
    from x2i_core.prompt_files import cli_prompt

    guides, control_media = adapter_inputs(dit)  # ControlNets, IP-Adapter (their images checked now)
    images = (*images, *control_media)  # --control-to-encoder: the MLLM reads the control images too
    batch_defaults = {k: v for k, v in dict(seed=seed, num_images=num_images, steps=steps, guidance=guidance,
                                            true_cfg=true_cfg, negative_prompt=negative_prompt, width=width,
                                            height=height, reason=reason).items() if v is not None}
    if batch is not None:
        from x2i_cli.batch import check_batch

        if text or images or videos or audios or prompt_file:
            raise X2IError("--batch takes every prompt from its file: give no TEXT, --image, --video, --audio or "
                           "--prompt-file")
        batch_items = check_batch(batch, output, batch_defaults)  # every line checked before anything loads
    else:
        prompt = cli_prompt(text, images, videos, audios, prompt_file)  # inline <image:...> references keep their place
        if prompt.is_empty():
            raise X2IError("the prompt is empty: give TEXT and/or --image, --video, --audio")
        # everything below is checked before loading gigabytes; X2IPipeline.__call__ checks the same limits again
        check_generation(width=width, height=height, num_images=num_images, steps=steps, guidance=guidance,
                         true_cfg=true_cfg, seed=seed, text=prompt_text(prompt), negative_prompt=negative_prompt)
        check_media_files(prompt)
        output_paths(output, num_images, seed)  # a bad -o fails now, not after sampling
    adapters, dit_fields = dit_inputs(dit)  # LoRAs, init image, strength, mask, outpaint
    adapters = [*adapters, *guides]
    check_against_backbone(guides, backbone_path)  # a local ControlNet of other widths: refused before loading
    bb_options = backbone_options(dit)  # --transformer-file
    encoder, backbone, aligner, encoder_path, backbone_path, world, note = _pick_models(
        encoder, backbone, aligner, encoder_path, backbone_path)
    if world is not None:
        click.echo(world.message or f"Using the default world {world.name!r}.", err=True)  # say which world answers
        adapters = _world_edit_adapters(world, prompt, adapters, dit_fields)
    if note:
        click.echo(note, err=True)

    from x2i_core.generate import X2IPipeline, save_images  # imports torch
    from x2i_cli.quiet import quiet_libraries

    quiet_libraries()  # our own progress bar replaces their loading bars and notices
    if batch is not None:
        from x2i_cli.batch import process_share

        rank, world_size, barrier, process_device = process_share()
        device = device or process_device  # each process on its own GPU under accelerate/torchrun
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as progress:
        loading = progress.add_task("loading models", total=3)

        def on_load(what):
            progress.update(loading, description=f"loading {what}")
            progress.advance(loading)

        pipe = X2IPipeline.from_names(
            encoder, backbone, aligner, encoder_path=encoder_path, backbone_path=backbone_path,
            device=device, dtype=dtype, offload=offload, memory=memory, trust_remote_code=trust_remote_code,
            on_load=on_load, adapters=adapters, encoder_options={"use_audio_in_video": True} if video_sound else None,
            backbone_options=bb_options,
        )
        progress.remove_task(loading)
        for note in pipe.backbone.notes:
            console.print(f"[yellow]Note:[/] {note}")
        if batch is not None:
            from x2i_cli.batch import run

            progress.stop()

            def make(prompt, **settings):
                return pipe(prompt, **dit_fields, reason_tokens=reason_tokens, reason_with_prompt=reason_with_prompt,
                            **settings)

            return run(make, batch_items, output, batch_defaults, console, rank=rank, world=world_size,
                       barrier=barrier)
        total_steps = steps or pipe.backbone.default_steps
        task = progress.add_task("encode", total=total_steps + 3)

        def on_phase(name):
            if name in ("align", "denoise"):
                progress.advance(task)  # encode / align is done; denoise advances once per step
            progress.update(task, description=name)

        def on_step(i, total):
            progress.update(task, total=total + 3, description=f"denoise {i}/{total}")
            progress.advance(task)

        result = pipe(prompt, num_images=num_images, steps=steps, guidance=guidance, seed=seed,
                      width=width, height=height, on_step=on_step, on_phase=on_phase, **dit_fields, true_cfg=true_cfg,
                      negative_prompt=negative_prompt, reason=reason, reason_tokens=reason_tokens,
                      reason_with_prompt=reason_with_prompt)
        progress.update(task, completed=progress.tasks[-1].total)
    paths = save_images(result, output, seed=seed)
    if reason:  # on stderr: stdout lists the written files only
        click.echo(f"Answer: {result[0].info.get('answer', '')}", err=True)
    for path in paths:
        click.echo(str(path))

"""`x2i generate --batch FILE.jsonl -o DIR`: the prompt checks before loading, and the run with its progress bar.

The models load once (by `x2i generate`'s own code); x2i_core.batch makes the lines, skips finished ones and
writes the manifest. Under `accelerate launch` or `torchrun` each process takes its share of the lines.
"""
from __future__ import annotations

import os

import click

from x2i_core.errors import X2IError


def check_batch(batch_file: str, output: str | None, defaults: dict) -> list:
    """Read and check every line before any model loads: its settings' limits, its media files, the output folder."""
    from x2i_core.batch import read_batch
    from x2i_core.generate import check_media_files
    from x2i_core.limits import check_generation, prompt_text
    from x2i_core.outputs import check_output_dir

    if not output:
        raise X2IError("--batch needs -o DIR (a folder: one <id>-<i>.png per image, and manifest.json)")
    if output.lower().endswith(".png"):
        raise X2IError(f"--batch writes a folder of images: -o must be a folder, not {output}")
    check_output_dir(output)
    items = read_batch(batch_file)
    for item in items:
        s = {**defaults, **item.settings}
        try:
            check_generation(width=s.get("width"), height=s.get("height"), num_images=s.get("num_images", 1),
                             steps=s.get("steps"), guidance=s.get("guidance"), true_cfg=s.get("true_cfg"),
                             seed=s.get("seed", 0), text=prompt_text(item.prompt),
                             negative_prompt=s.get("negative_prompt", ""))
            check_media_files(item.prompt)
        except X2IError as exc:
            raise X2IError(f"{os.path.basename(batch_file)} line {item.line}: {exc}") from None
    return items


def process_share() -> tuple[int, int, object, str | None]:
    """(rank, world size, barrier, device) under accelerate/torchrun; (0, 1, no-op, None) in a plain process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, (lambda: None), None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # without cpu=True every CPU process thinks it is alone
    return state.process_index, state.num_processes, state.wait_for_everyone, str(state.device)


def run(pipe, items: list, output: str, defaults: dict, console, *, rank: int, world: int, barrier) -> None:
    """Make this process's unfinished lines with a progress bar (ETA), then (process 0) write manifest.json."""
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from x2i_core.batch import run_batch, shard, write_manifest

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    mine = shard(items, rank, world)
    skipped = []
    with Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  disable=not console.is_terminal or rank != 0) as progress:
        task = progress.add_task("batch", total=len(mine))

        def on_item(item, was_done):
            if was_done:
                skipped.append(item.id)
            progress.advance(task)

        made = run_batch(pipe, items, out, defaults=defaults, rank=rank, world=world, on_item=on_item)
    barrier()
    if rank == 0:
        manifest = write_manifest(out, items)
        click.echo(f"{manifest}", err=False)
    click.echo(f"process {rank}: made {made} line(s), skipped {len(skipped)} finished", err=True)

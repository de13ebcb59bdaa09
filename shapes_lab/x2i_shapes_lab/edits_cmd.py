"""`x2i shapes make-edits` (edit triples as a training folder) and `x2i shapes eval-edits` (edit accuracy of the
student, optionally with a LoRA and/or a LightControl branch, judged by the world's evaluator)."""
from __future__ import annotations

import json
import time

import click


@click.command("make-edits")
@click.option("-o", "--out", required=True, metavar="DIR", help="Folder to write (images/ + index.jsonl).")
@click.option("-n", "--num", default=2000, show_default=True, help="Training edits (no held-out pair anywhere).")
@click.option("--kinds", default="colour", show_default=True, help="Edit kinds, comma-separated: colour, shape.")
@click.option("--heldout", is_flag=True, help="Write the held-out evaluation edits instead (the benchmark's edit set).")
@click.option("--seed", default=None, type=int, help="Seed of the training scenes (default: the lab's).")
def make_edits(out, num, kinds, heldout, seed):
    """Write edit triples ("make it <colour>" / "make it a <shape>") as a folder for train-lightcontrol/train-lora."""
    from .edits import KINDS, TRAIN_SEED, heldout_edits, train_edits, write_folder

    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    bad = [k for k in chosen if k not in KINDS]
    if bad or not chosen:
        raise click.BadParameter(f"kinds are {', '.join(KINDS)}", param_hint="--kinds")
    triples = heldout_edits(num) if heldout else train_edits(num, chosen, TRAIN_SEED if seed is None else seed)
    click.echo(str(write_folder(out, triples)))


@click.command("eval-edits")
@click.option("-n", "--num", default=100, show_default=True, help="Held-out edits to make.")
@click.option("--lora", default=None, metavar="DIR", help="A LoRA (x2i train-lora) to apply.")
@click.option("--lightcontrol", default=None, metavar="DIR", help="A LightControl branch (x2i train-lightcontrol).")
@click.option("--lightcontrol-scale", default=1.0, show_default=True)
@click.option("--data", default=None, metavar="DIR", help="Score the edits of this folder instead of the held-out set.")
@click.option("--steps", type=int, default=None, help="Denoising steps (default: the backbone's).")
@click.option("--true-cfg", type=float, default=None, help="True CFG scale (default: the preset's, 3).")
@click.option("--json-out", default=None)
def eval_edits(num, lora, lightcontrol, lightcontrol_scale, data, steps, true_cfg, json_out):
    """Held-out edit accuracy: the asked attribute changed, every other one kept (evaluate.score on the target)."""
    from .edits_eval import run_edit_eval

    began = time.perf_counter()
    summary = run_edit_eval(num, lora=lora, lightcontrol=lightcontrol, lightcontrol_scale=lightcontrol_scale,
                            data=data, steps=steps, true_cfg=true_cfg)
    summary["seconds"] = round(time.perf_counter() - began, 1)
    click.echo(json.dumps(summary))
    if json_out:
        with open(json_out, "w") as f:
            json.dump(summary, f, indent=1)

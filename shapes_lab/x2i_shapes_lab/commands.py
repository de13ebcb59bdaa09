"""`x2i shapes ...` (or `python -m x2i_shapes_lab ...`): evaluate the world's models, train them, and write the
report. Torch loads inside each command, so listing the commands stays fast."""
from __future__ import annotations

import json

import click


@click.group()
def shapes():
    """The lab of the built-in shapes world: evaluate, train (VAE, teacher, MLLM), probe and report."""


@shapes.command("eval")
@click.option("--model", type=click.Choice(["teacher", "student", "truth"]), default="student", show_default=True,
              help="teacher = T5+CLIP, student = MLLM+AlignNet, truth = rendered ground truth (checks the evaluator).")
@click.option("--set", "sets", multiple=True,
              help="Prompt sets: heldout, seen, german, image, edit, image-seen (default: all that apply).")
@click.option("-n", "--num", default=100, show_default=True, help="Prompts per set.")
@click.option("--steps", type=int, default=None, help="Denoising steps (default: the backbone's).")
@click.option("--aligner", default=None, help="AlignNet folder (default: the shipped one).")
@click.option("--backbone-path", default=None, help="Teacher folder (default: the shipped one).")
@click.option("--encoder-path", default=None, help="MLLM folder (default: the shipped one).")
@click.option("--true-cfg", type=float, default=None, help="True CFG scale, 1 = off (default: the preset's, 3).")
@click.option("--json-out", default=None, help="Also write the results as JSON here.")
@click.option("--reason", is_flag=True,
              help="Student only: the MLLM first answers --reason-prompt about each prompt (greedy) and its answer's "
                   "hidden states condition the image, as `x2i generate --reason`; the answers are scored too.")
@click.option("--reason-prompt", default=None,
              help="The instruction asked after each prompt, as a user turn of its own (default: the world's "
                   "captioning task, \"describe it in english\").")
@click.option("--reason-tokens", default=None, type=int, help="The answer's token cap (default 40).")
@click.option("--reason-states", type=click.Choice(["answer", "dialogue", "retyped"]), default=None,
              help="What conditions the image: the answer's tokens (default, `x2i generate --reason`), the dialogue's "
                   "then the answer's (`--reason-with-prompt`), or the answer's text typed as a new English prompt "
                   "(a diagnostic: the text path on the same words).")
def eval_cmd(model, sets, num, steps, aligner, backbone_path, encoder_path, true_cfg, json_out, reason, reason_prompt,
             reason_tokens, reason_states):
    """Generate from held-out prompts and print per-attribute and all-correct accuracy."""
    import numpy as np

    from .benchmark import SETS, load_world, prompts_and_targets, run_set, student_fn, teacher_fn
    from .evaluate import format_summary, score, summarise
    from .world import render

    from .reason import REASON_PROMPT, REASON_TOKENS, colour_and_shape, run_reason_set

    unknown = [name for name in sets if name not in SETS]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: the sets are {', '.join(SETS)}", param_hint="--set")
    if (reason or reason_prompt or reason_tokens or reason_states) and model != "student":
        raise click.UsageError("--reason (and its options) needs --model student: only the MLLM answers")
    if reason_tokens is not None and reason_tokens < 1:
        raise click.BadParameter("must be at least 1", param_hint="--reason-tokens")
    reason = reason or bool(reason_prompt) or reason_tokens is not None or bool(reason_states)
    results = {}
    if model == "truth":
        for name in sets or ("heldout", "seen", "edit"):
            _, targets, checks = prompts_and_targets(name, num)
            summary = summarise([score(np.asarray(render(t)), t, c) for t, c in zip(targets, checks)])
            results[name] = summary
            click.echo(f"truth   {name:8s} {format_summary(summary, num)}")
    else:
        backbone, encoder, align = load_world(aligner, encoder_dir=encoder_path, backbone_dir=backbone_path,
                                              student=model == "student")
        if true_cfg is not None:
            if true_cfg < 1:
                raise click.BadParameter("must be at least 1 (1 = off)", param_hint="--true-cfg")
            backbone.default_true_cfg = true_cfg
        steps = steps or backbone.default_steps
        fn = student_fn(encoder, align) if model == "student" else teacher_fn(backbone)
        default = ("image", "image-seen") if reason else SETS if model == "student" else ("heldout", "seen")
        for name in sets or default:
            if model == "teacher" and name not in ("heldout", "seen"):
                raise click.UsageError("the teacher reads English text only: --set heldout or seen")
            if reason:
                summary, said, answers, _, _ = run_reason_set(
                    backbone, encoder, align, name, num, steps=steps, instruction=reason_prompt or REASON_PROMPT,
                    max_new_tokens=reason_tokens or REASON_TOKENS, states=reason_states or "answer")
                results[name] = {**summary, "answer": said, "answers": answers}
                click.echo(f"reason  {name:8s} {format_summary(summary, num)}")
                click.echo(f"answer  {name:8s} {format_summary(said, num)} (what the answers' text names; the first: "
                           f"{answers[0]!r})")
                continue
            summary, images, targets = run_set(backbone, fn, name, num, steps=steps)
            if name in ("image", "image-seen", "edit"):  # the report's image->image figure
                summary["colour_shape"] = colour_and_shape(images, targets)
            results[name] = summary
            click.echo(f"{model:7s} {name:8s} {format_summary(summary, num)}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(results, f, indent=1)


@shapes.command("probe")
@click.option("-n", "--num", default=100, show_default=True)
@click.option("--encoder-path", default=None, help="An MLLM folder other than the shipped one.")
def probe_cmd(num, encoder_path):
    """Retrieval image<->English<->German from the shapes MLLM's hidden states on held-out scenes, which
    English words its image tokens are nearest to, and whether a linear read-out finds the shape in its image
    states apart from colour (per layer, on training pairs of unseen colours and on held-out pairs)."""
    from x2i_core import load_component

    from .probe import image_token_words, probe, shape_readout

    enc = load_component("encoder", "shapes-mllm", encoder_path, device="cpu", dtype="fp32")
    click.echo(json.dumps({"retrieval": probe(enc, num), "image_token_words": image_token_words(enc, num // 2),
                           "shape_readout": shape_readout(enc, 6 * num, 3 * num)}, indent=1))


@shapes.command("train-vae")
@click.option("-o", "--out", required=True)
@click.option("--steps", default=800, show_default=True)
@click.option("--seed", default=0, show_default=True)
def train_vae_cmd(out, steps, seed):
    """Train the world's AutoencoderKL from scratch (1 thread)."""
    from .train_vae import train

    train(out, steps, 16, seed=seed)


@shapes.command("finetune-decoder")
@click.option("--vae", required=True, help="The VAE folder from train-vae.")
@click.option("-o", "--out", required=True)
@click.option("--steps", default=2000, show_default=True)
def finetune_decoder_cmd(vae, out, steps):
    """Sharpen the VAE decoder with the encoder frozen (latents, hence the teacher, unchanged)."""
    from .finetune_decoder import finetune

    finetune(vae, out, steps)


@shapes.command("train-teacher")
@click.option("--vae", required=True, help="The VAE folder from train-vae.")
@click.option("-o", "--out", required=True)
@click.option("--steps", default=1800, show_default=True)
@click.option("--batch", default=32, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Stop (and save) after this wall time.")
@click.option("--init", default=None, help="Continue from this teacher folder (fresh schedule).")
@click.option("--t-sampling", type=click.Choice(["logit-normal", "mixed"]), default="logit-normal", show_default=True,
              help="Training timesteps: logit-normal (SD3/Flux), or mixed = half uniform (more weight near pure noise).")
@click.option("--lr", default=1e-3, show_default=True, help="Peak learning rate (warm-up, then cosine to 0).")
@click.option("--ema-decay", default=0.999, show_default=True, help="Saved weights are this moving average (0: off).")
@click.option("--foreground-weight", default=1.0, show_default=True,
              help="Loss weight of latent tokens showing part of a shape, relative to plain background.")
def train_teacher_cmd(vae, out, steps, batch, seed, max_minutes, init, t_sampling, lr, ema_decay, foreground_weight):
    """Train the teacher (Flux transformer + T5 + CLIP, English) and save a FluxPipeline folder."""
    from .train_teacher import train

    train(vae, out, steps, batch, lr=lr, seed=seed, max_minutes=max_minutes or 1e9, init=init, t_sampling=t_sampling,
          ema_decay=ema_decay, foreground_weight=foreground_weight)


@shapes.command("train-mllm")
@click.option("-o", "--out", required=True)
@click.option("--steps", default=3000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="Peak learning rate (warm-up, then cosine to 0).")
@click.option("--init", default=None, help="Continue from this MLLM folder (fresh schedule).")
@click.option("--token-weight", default=0.0, show_default=True,
              help="Weight of the token-level term that puts German and image token states near English ones.")
@click.option("--words", default=0, show_default=True,
              help="Dictionary pairs per step (inflected German colour word <-> English word).")
@click.option("--image-transport-weight", default=0.0, show_default=True,
              help="Weight of the optimal-transport term that matches image token states, as a set, one to one "
                   "with the full English caption's (the image views then leave the --token-weight term).")
@click.option("--object-weight", default=0.0, show_default=True,
              help="Weight of the object-level term: each image token's states pulled onto the caption word its "
                   "cell stands for (object cells: shape, colour, size, position; others: background).")
@click.option("--object-cells", type=click.Choice(["first", "last"]), default="first", show_default=True,
              help="Which of an object's cells (raster order) stands for its shape: the first, or the last "
                   "(the only one the causal language model lets see the whole object).")
@click.option("--object-words-once", is_flag=True,
              help="Give each caption word one image token only (cells left over take the background words), so "
                   "that a one-object image does not read as several objects.")
@click.option("--vision-shape-weight", default=0.0, show_default=True,
              help="Weight of a shape-classification term on the vision tower's output, for shapes in colours "
                   "outside the palette (so that it sees shape apart from colour).")
@click.option("--max-minutes", type=float, default=1e9, help="Stop (and save) after this wall time.")
def train_mllm_cmd(out, steps, seed, lr, init, token_weight, words, image_transport_weight, object_weight,
                   object_cells, object_words_once, vision_shape_weight, max_minutes):
    """Train the small Qwen2.5-VL on the world (captioning EN/DE, translation, QA, edits, contrastive)."""
    from .train_mllm import train

    train(out, steps, lr=lr, seed=seed, token_weight=token_weight, n_words=words, init=init,
          max_minutes=max_minutes, image_transport_weight=image_transport_weight, object_weight=object_weight,
          object_cells=object_cells, object_words_once=object_words_once, vision_shape_weight=vision_shape_weight)


@shapes.command("to-fp16")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def to_fp16_cmd(folders):
    """Store the weights of trained FOLDERS in fp16, in place (how the shipped weights are kept)."""
    from .half import halve_folder

    for folder in folders:
        for path in halve_folder(folder):
            click.echo(f"fp16: {path}")


@shapes.command("write-prompts")
@click.option("-o", "--out", required=True, help="A .txt file: one English training caption per line.")
@click.option("-n", "--num", default=20000, show_default=True)
@click.option("--seed", default=4242, show_default=True)
def write_prompts_cmd(out, num, seed):
    """English captions of training scenes (no held-out pair), the corpus `x2i align` reads."""
    import random

    from .world import caption, scenes

    rng = random.Random(seed)
    with open(out, "w") as f:
        for s in scenes(seed, num, split="train"):
            f.write(caption(s, "en", rng) + "\n")
    click.echo(out)


@shapes.command("report")
@click.option("-n", "--num", default=400, show_default=True,
              help="Prompts per set. 100 leave 4-5 points of sampling noise on each figure, 400 about 2 "
                   "(29 min on one thread).")
@click.option("--ablations", default=None,
              help="Folder holding the ablation AlignNets (conv-rkl, last-mse, ...; default: shapes_lab/weights/ablations).")
def report_cmd(num, ablations):
    """Write docs/shapes_world.md and docs/shapes_grid.png from fresh measurements."""
    from .report import write_report

    write_report(num=num, ablations=ablations, log=click.echo)


from .edits_cmd import eval_edits, make_edits  # noqa: E402  (the edit commands live in their own file)

shapes.add_command(make_edits)
shapes.add_command(eval_edits)

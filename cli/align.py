"""`x2i align` (train an AlignNet by attention distillation) and `x2i eval-align` (teacher vs student).

torch is imported only inside the command functions, so `x2i --help` stays fast.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from x2i_core.align.config import LOSSES, TIMESTEP_MODES, AlignConfig
from x2i_core.training.options import config_options, config_values


ALIGN_OPTIONS = (
    "encoder", "backbone", "encoder_path", "backbone_path", "data", "text_key", "output_dir", "init", "steps",
    "batch_size", "grad_accum", "lr", "warmup", "max_grad_norm", "weight_decay", "optimizer", "loss", "temperature",
    "image_side_only", "term_weights", "timesteps", "intermediate_latents", "hidden_noise", "empty_prompt_prob",
    "resolution", "guidance", "teacher_max_length", "fusion", "skip_layers", "token_kernel", "context_layers",
    "masked_pool", "checkpoint_every", "keep_checkpoints", "resume", "stop_after", "mixed_precision", "dtype",
    "gradient_checkpointing", "seed", "shuffle_buffer", "log_csv", "tensorboard",
)  # --help order; every option's default, type and help come from AlignConfig's field metadata


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@config_options(AlignConfig, only=ALIGN_OPTIONS)
@click.option("--precompute-teacher", default=None, metavar="DIR",
              help="Only encode every --data prompt with the teacher's T5+CLIP into DIR (safetensors shards), then exit.")
@config_options(AlignConfig, only=("teacher_cache", "device", "progress"))
def align(**opts):
    """Train an AlignNet by attention distillation (X2I stage 1).

    One frozen transformer serves both passes of every step: the teacher pass (the backbone's own
    T5 + CLIP conditioning, no grad) and the student pass (encoder hidden states -> AlignNet, grad
    flows through the frozen transformer into the AlignNet only), on the same noise and timestep.
    Hooks capture every attention output (FLUX.1-dev: 19 double blocks x image/text + 38 single
    blocks x text/image) and the loss compares them.

    \b
    One GPU:
      x2i align --encoder qwen2.5-vl-7b --backbone flux-dev --data captions.txt -o my-alignnet
    Many GPUs (DDP; FSDP/DeepSpeed settings come from `accelerate config`):
      accelerate launch --multi_gpu --num_processes 8 -m x2i_cli.main align ... -o my-alignnet
      torchrun --nproc_per_node 8 -m x2i_cli.main align ... -o my-alignnet
    Interrupted (Ctrl-C or SIGTERM save a checkpoint first)? Run the same command with --resume.
    """
    cfg = AlignConfig(**config_values(AlignConfig, opts))
    from x2i_cli.quiet import quiet_libraries

    quiet_libraries()  # our rich progress bar replaces their loading bars
    if opts["precompute_teacher"]:
        from x2i_core.align.teacher_build import build_teacher_cache
        from x2i_core.errors import InputError

        if not cfg.data:
            raise InputError("no prompt data given (--data PATH)")
        count = build_teacher_cache(cfg, opts["precompute_teacher"])
        if count:
            click.echo(f"teacher cache: {count} prompts in {opts['precompute_teacher']} (train with --teacher-cache)")
        return
    from x2i_core.align.trainer import run_alignment

    result = run_alignment(cfg)
    if result.rank != 0:
        return
    if result.interrupted:
        click.echo(f"stopped at step {result.step}; checkpoint {result.checkpoint}; "
                   f"continue with the same command plus --resume", err=True)
    elif result.last_loss is not None:
        click.echo(f"AlignNet written to {result.output_dir} after {result.step} steps (last loss {result.last_loss:.5g})")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--aligner", required=True, metavar="DIR", help="The AlignNet folder to evaluate (an `x2i align` output).")
@click.option("--data", "data", multiple=True, required=True, metavar="PATH",
              help="Held-out prompt files (same formats as `x2i align`); the first --num-prompts in file order are used.")
@click.option("--encoder", default=None, help="Encoder name or folder (default: what the AlignNet records).")
@click.option("--backbone", default=None, help="Backbone name or folder with the teacher (default: what the AlignNet records).")
@click.option("--encoder-path", default=None, help="Checkpoint for --encoder.")
@click.option("--backbone-path", default=None, help="Checkpoint for --backbone.")
@click.option("--num-prompts", type=int, default=8, show_default=True, help="How many held-out prompts to compare.")
@click.option("--text-key", default="text", show_default=True, help="JSON key of the caption in JSONL lines and .json members.")
@click.option("--steps", type=int, default=None, help="Sampling steps (default: the backbone's).")
@click.option("--resolution", type=int, default=None,
              help="Square image size (default: the resolution the AlignNet was aligned at, else the backbone's).")
@click.option("--guidance", type=float, default=None, help="Guidance (default: the backbone's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the shared noise of each prompt.")
@click.option("--loss", type=click.Choice(LOSSES), default="rkl", show_default=True, help="Distillation terms to report.")
@click.option("--timesteps", type=click.Choice(TIMESTEP_MODES), default="one", show_default=True,
              help="Timestep setting of the reported distillation terms (as in `x2i align`).")
@click.option("--image-side-only", is_flag=True, help="Report image-side terms only.")
@click.option("--teacher-max-length", type=int, default=None, help="T5 tokens of the teacher (default: the backbone's).")
@click.option("--teacher-cache", default=None, metavar="DIR", help="Teacher embeddings from a cache instead of T5/CLIP.")
@click.option("--save-images", default=None, metavar="DIR", help="Write teacher-NNN.png / student-NNN.png pairs here.")
@click.option("--json", "json_out", default=None, metavar="FILE", help="Also write the results (and per-prompt rows) as JSON.")
@click.option("--device", default=None, help="cuda, cuda:1 or cpu (default: CUDA when available).")
@click.option("--dtype", type=click.Choice(("bf16", "fp16", "fp32")), default=None,
              help="Models' dtype (default bf16 on CUDA, fp32 on CPU).")
def eval_align(**opts):
    """Compare student (encoder + AlignNet) and teacher (T5 + CLIP) samples on held-out prompts.

    Both sample from the same noise with the same steps and guidance. Reported: final latent MSE (before
    the VAE), pixel MSE and PSNR of the decoded RGB images in [0, 1], and the distillation loss with
    each term kind averaged over blocks (sigma 1 unless --timesteps says otherwise).
    """
    from x2i_cli.quiet import quiet_libraries
    from x2i_core.align.evaluate import EvalConfig, evaluate_alignnet
    from x2i_core.outputs import check_output_file

    quiet_libraries()
    cfg = EvalConfig(
        aligner=opts["aligner"], data=list(opts["data"]), encoder=opts["encoder"], backbone=opts["backbone"],
        encoder_path=opts["encoder_path"], backbone_path=opts["backbone_path"],
        num_prompts=opts["num_prompts"], text_key=opts["text_key"], steps=opts["steps"], resolution=opts["resolution"],
        guidance=opts["guidance"], seed=opts["seed"], loss=opts["loss"], timesteps=opts["timesteps"],
        image_side_only=opts["image_side_only"], teacher_max_length=opts["teacher_max_length"],
        teacher_cache=opts["teacher_cache"], save_images=opts["save_images"], device=opts["device"], dtype=opts["dtype"],
    )
    cfg.validate()
    if opts["json_out"]:
        check_output_file(opts["json_out"], "--json")  # before minutes of sampling, not after
    cfg, note = cfg.with_recorded_models()  # what the AlignNet records is the default; explicit options win
    if note:
        click.echo(note, err=True)
    result = evaluate_alignnet(cfg)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"teacher vs student: {opts['aligner']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.table_rows():
        table.add_row(name, value)
    Console().print(table)
    if opts["json_out"]:
        from dataclasses import asdict

        Path(opts["json_out"]).write_text(json.dumps(asdict(result), indent=2, ensure_ascii=False))

"""`x2i align` (train an AlignNet by attention distillation) and `x2i eval-align` (teacher vs student).

torch is imported only inside the command functions, so `x2i --help` stays fast.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from x2i_core.align.config import (
    INTERMEDIATE_LATENTS, LOSSES, MIXED_PRECISION, OPTIMIZERS, TIMESTEP_MODES, AlignConfig, parse_term_weights,
)

D = AlignConfig()  # defaults shown in --help come from the one dataclass


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--encoder", default=D.encoder, show_default=True,
              help="Multimodal encoder: a registered name (qwen2.5-vl-7b, qwen2.5-vl-3b, ...) or a model folder.")
@click.option("--backbone", default=D.backbone, show_default=True,
              help="Backbone: a registered name (flux-dev, flux-schnell, shuttle-3-diffusion, flux) or a Flux folder "
                   "that also holds the teacher's text_encoder/ (CLIP) and text_encoder_2/ (T5).")
@click.option("--encoder-path", default=None, help="Checkpoint (hub id or folder) for --encoder instead of its default.")
@click.option("--backbone-path", default=None, help="Checkpoint (hub id or folder) for --backbone instead of its default.")
@click.option("--data", "data", multiple=True, metavar="PATH",
              help="Prompt files, repeatable: .txt (one prompt a line), .jsonl (see --text-key), WebDataset .tar shards "
                   "(each sample's .json[--text-key] or .txt); folders, globs ('shards/*.tar') and brace lists "
                   "('shard-{000..099}.tar') work. UTF-8.")
@click.option("--text-key", default=D.text_key, show_default=True, help="JSON key of the caption in JSONL lines and .json members.")
@click.option("-o", "--output", "output", default=None, metavar="DIR",
              help="Output folder: the final AlignNet (config.json + safetensors, loadable with --aligner DIR), "
                   "x2i_align.json (what it was trained for), train_log.csv and checkpoints/.")
@click.option("--init", default=None, metavar="DIR",
              help="Start from an existing AlignNet folder instead of random weights; its architecture (fusion, "
                   "skip and context layers, token kernel) is kept and the options for a new AlignNet are ignored.")
@click.option("--steps", type=int, default=D.steps, show_default=True,
              help="Optimizer updates (the paper reports 98.2%% of the teacher after 8K; the reference ran 45-57K).")
@click.option("--batch-size", type=int, default=D.batch_size, show_default=True, help="Prompts per process per micro-step.")
@click.option("--grad-accum", type=int, default=D.grad_accum, show_default=True, help="Micro-steps per optimizer update.")
@click.option("--lr", type=float, default=D.lr, show_default=True, help="Peak AdamW learning rate.")
@click.option("--warmup", type=int, default=D.warmup, show_default=True, help="Linear warm-up updates before the cosine decay.")
@click.option("--max-grad-norm", type=float, default=D.max_grad_norm, show_default=True, help="Gradient clipping norm.")
@click.option("--weight-decay", type=float, default=D.weight_decay, show_default=True,
              help="AdamW decoupled weight decay (larger values shrink weights that the training prompts never "
                   "exercise, which otherwise keep their random init).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=D.optimizer, show_default=True,
              help="adamw (torch) or adamw8bit (bitsandbytes, CUDA; the reference's choice, saves ~0.2 GB here).")
@click.option("--loss", type=click.Choice(LOSSES), default=D.loss, show_default=True,
              help="rkl = KL(student||teacher) of channel softmaxes of standardised attention outputs (the reference); "
                   "kl = KL(teacher||student); js = Jensen-Shannon; mse = squared error of the standardised outputs.")
@click.option("--temperature", type=float, default=D.temperature, show_default=True, help="Softmax temperature of rkl/kl/js.")
@click.option("--image-side-only", is_flag=True,
              help="Distil image-token outputs only (MLLM and T5 text positions do not correspond; method.md).")
@click.option("--term-weights", default=None, metavar="KIND=W,...",
              help="Per-kind weights, e.g. 'double_text=0.5,single_text=0'; kinds: double_image, double_text, "
                   "single_image, single_text (default 1 each).")
@click.option("--timesteps", type=click.Choice(TIMESTEP_MODES), default=D.timesteps, show_default=True,
              help="one = sigma 1, pure noise (the reference); uniform = U(0,1]; shifted = U(0,1] shifted as FLUX samples "
                   "at this resolution.")
@click.option("--intermediate-latents", type=click.Choice(INTERMEDIATE_LATENTS), default=D.intermediate_latents,
              show_default=True,
              help="For sigma < 1 (there are no images): noise = the pure noise itself; teacher = (1-sigma)*x0 + sigma*noise "
                   "with x0 the teacher's one-step estimate at sigma 1 (one extra no-grad pass).")
@click.option("--hidden-noise", type=float, default=D.hidden_noise, show_default=True,
              help="Gaussian noise added to the encoder's hidden states, as a fraction of each layer's RMS: "
                   "penalises the AlignNet's sensitivity to directions English prompts never use, which other "
                   "languages and images may occupy (0 = off, as in the paper).")
@click.option("--empty-prompt-prob", type=float, default=D.empty_prompt_prob, show_default=True,
              help="Share of prompts replaced by the empty prompt, so the AlignNet also learns the teacher's "
                   "unconditional embedding (needed for --true-cfg at generation).")
@click.option("--resolution", type=int, default=D.resolution, show_default=True, help="Square image size of the noise latents.")
@click.option("--guidance", type=float, default=None,
              help="Guidance value fed to the transformer in both passes (default: the backbone's, 3.5 for FLUX.1-dev).")
@click.option("--teacher-max-length", type=int, default=None,
              help="T5 tokens of the teacher (default: the backbone's, 512 for FLUX.1-dev).")
@click.option("--fusion", type=click.Choice(("conv", "scale", "last")), default=D.fusion, show_default=True,
              help="Layer fusion of a new AlignNet: conv (paper), scale (InternVL-1B variant), last (ablation).")
@click.option("--skip-layers", type=int, default=D.skip_layers, show_default=True,
              help="Leave the first N hidden states out of a new AlignNet's fusion; 1 = drop the token-embedding "
                   "output, which is word identity with no context and so language-specific (0 = the paper).")
@click.option("--token-kernel", type=int, default=None,
              help="Extent along the sequence of a new conv AlignNet's kernel (default 5, the paper's 5x5); 1 mixes "
                   "layers and hidden dims but not neighbouring tokens, so word order matters less.")
@click.option("--context-layers", type=int, default=D.context_layers, show_default=True,
              help="Bidirectional self-attention layers after a new AlignNet's fusion (0 = the paper): a causal "
                   "MLLM's word cannot see the words after it, while T5 is bidirectional.")
@click.option("--masked-pool/--unmasked-pool", default=D.masked_pool, show_default=True,
              help="Pooled embedding averages real tokens only, or padding too (the reference's behaviour).")
@click.option("--checkpoint-every", type=int, default=D.checkpoint_every, show_default=True,
              help="Write a checkpoint (atomically) every N updates.")
@click.option("--keep-checkpoints", type=int, default=D.keep_checkpoints, show_default=True, help="How many to keep.")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[CKPT]",
              help="Continue from the newest checkpoint in -o DIR (or the folder given): same data order, "
                   "optimizer and schedule, so the loss follows the uninterrupted run.")
@click.option("--stop-after", type=int, default=None,
              help="Stop after N updates of this run with a checkpoint, as if interrupted (for chunked jobs).")
@click.option("--mixed-precision", type=click.Choice(MIXED_PRECISION), default=D.mixed_precision, show_default=True,
              help="Autocast of the AlignNet: auto = bf16 on CUDA, none on CPU. Frozen models use --dtype.")
@click.option("--dtype", type=click.Choice(("bf16", "fp16", "fp32")), default=None,
              help="Frozen models' dtype (default bf16 on CUDA, fp32 on CPU).")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=D.gradient_checkpointing, show_default=True,
              help="Recompute transformer blocks in the backward pass (needed for 1024 px on one GPU).")
@click.option("--seed", type=int, default=D.seed, show_default=True, help="Seeds data order, noise and timesteps.")
@click.option("--shuffle-buffer", type=int, default=D.shuffle_buffer, show_default=True, help="Prompts in the shuffle buffer.")
@click.option("--log-csv", default=None, metavar="FILE", help="Per-step CSV of every loss term (default DIR/train_log.csv).")
@click.option("--tensorboard", is_flag=True, help="Also log to DIR/tensorboard (needs the tensorboard package).")
@click.option("--precompute-teacher", default=None, metavar="DIR",
              help="Only encode every --data prompt with the teacher's T5+CLIP into DIR (safetensors shards), then exit.")
@click.option("--teacher-cache", default=None, metavar="DIR",
              help="Train from a --precompute-teacher folder: T5 and CLIP are never loaded.")
@click.option("--device", default=None, help="cuda, cuda:1 or cpu (default: CUDA when available; multi-GPU via torchrun/accelerate).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
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
    cfg = AlignConfig(
        data=list(opts["data"]), output_dir=opts["output"] or "", encoder=opts["encoder"], backbone=opts["backbone"],
        encoder_path=opts["encoder_path"], backbone_path=opts["backbone_path"], init=opts["init"],
        text_key=opts["text_key"], steps=opts["steps"], batch_size=opts["batch_size"], grad_accum=opts["grad_accum"],
        lr=opts["lr"], warmup=opts["warmup"], max_grad_norm=opts["max_grad_norm"],
        weight_decay=opts["weight_decay"], optimizer=opts["optimizer"],
        loss=opts["loss"], temperature=opts["temperature"], image_side_only=opts["image_side_only"],
        term_weights=parse_term_weights(opts["term_weights"]), timesteps=opts["timesteps"],
        intermediate_latents=opts["intermediate_latents"], empty_prompt_prob=opts["empty_prompt_prob"],
        hidden_noise=opts["hidden_noise"],
        resolution=opts["resolution"], guidance=opts["guidance"],
        teacher_max_length=opts["teacher_max_length"], fusion=opts["fusion"], skip_layers=opts["skip_layers"],
        token_kernel=opts["token_kernel"], context_layers=opts["context_layers"],
        masked_pool=opts["masked_pool"],
        checkpoint_every=opts["checkpoint_every"], keep_checkpoints=opts["keep_checkpoints"], resume=opts["resume"],
        stop_after=opts["stop_after"], mixed_precision=opts["mixed_precision"], dtype=opts["dtype"],
        gradient_checkpointing=opts["gradient_checkpointing"], seed=opts["seed"], shuffle_buffer=opts["shuffle_buffer"],
        log_csv=opts["log_csv"], tensorboard=opts["tensorboard"], teacher_cache=opts["teacher_cache"],
        device=opts["device"], progress=not opts["quiet"],
    )
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

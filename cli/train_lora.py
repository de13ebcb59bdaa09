"""`x2i train-lora`: a LoRA for image+text->image on the frozen FLUX transformer, conditioned by the frozen encoder +
AlignNet, on the shared training loop. Every option comes from LoraTrainConfig; torch loads inside the command only."""
from __future__ import annotations

import click

from x2i_core.training import config_options, config_values
from x2i_core.training.lora_config import LoraTrainConfig

_EPILOG = """\b
Examples:
  x2i train-lora --aligner my-alignnet --data edits/ -o my-lora --steps 1000 --rank 16
  x2i generate --aligner my-alignnet --image scene.png "make it blue" --lora my-lora
  x2i train-lora --aligner my-alignnet --data edits/ -o my-lora --steps 1000 --resume     continue after a stop
\b
--data DIR holds index.jsonl, one line per example: {"inputs": ["a.png", ...], "instruction": "...",
"target": "t.png"} (paths relative to the index; every target one size, a multiple of the backbone's size rule).
The output is diffusers' FLUX LoRA file (pytorch_lora_weights.safetensors with its adapter metadata):
FluxPipeline.load_lora_weights(DIR) loads it too.
"""


@click.command(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@config_options(LoraTrainConfig)
def train_lora(**opts):
    """Train a LoRA on the frozen transformer for image+text->image (inputs + instruction -> target)."""
    from x2i_cli.quiet import quiet_libraries
    from x2i_core.lora_training import train_lora as run

    cfg = LoraTrainConfig(**config_values(LoraTrainConfig, opts))
    cfg.validate()  # bad options answered before anything heavy
    quiet_libraries()
    result = run(cfg)
    if result.rank != 0:
        return
    if result.interrupted:
        click.echo(f"Stopped at step {result.step}; resume with --resume. Checkpoint: {result.checkpoint}", err=True)
    else:
        click.echo(f"LoRA written to {result.output_dir} after {result.step} steps (last loss {result.last_loss:.5g})")

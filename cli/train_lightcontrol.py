"""`x2i train-lightcontrol`: train the X2I paper's stage-2 LightControl branch on (source image, instruction, target)
edits, on the shared training loop (x2i_core.training). Every option comes from LightControlConfig. Torch loads
inside the command only."""
from __future__ import annotations

import click

from x2i_core.training.lightcontrol_config import LightControlConfig
from x2i_core.training import config_options, config_values

_EPILOG = """\b
Examples:
  x2i shapes make-edits -o edits/ -n 2000                 edit triples of the built-in shapes world
  x2i train-lightcontrol --data edits/ -o lightcontrol/ --steps 600 --batch-size 16 --lr 1e-3
  x2i generate --image scene.png "make it blue" --lightcontrol lightcontrol/
  x2i train-lightcontrol --data edits/ -o lightcontrol/ --steps 600 --resume     continue after a stop
\b
Models: --encoder/--backbone/--aligner as for x2i generate (an AlignNet made by x2i align records the other two;
none given: the default world). The transformer, MLLM, AlignNet and VAE stay frozen; only the branch trains.
"""


@click.command(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@config_options(LightControlConfig)
def train_lightcontrol(**opts):
    """Train a LightControl branch (one conv module per double block, reading the SOURCE image) for edits."""
    from x2i_core.lightcontrol_train import train_lightcontrol as run

    cfg = LightControlConfig(**config_values(LightControlConfig, opts))
    result = run(cfg)
    if result.interrupted:
        click.echo(f"Stopped at step {result.step}; resume with --resume. Checkpoint: {result.checkpoint}", err=True)
    else:
        click.echo(str(result.output_dir))

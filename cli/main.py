"""The `x2i` click group. Command modules import torch only inside their functions, so `--help` is fast."""
from __future__ import annotations

import sys

import click

from x2i_core.errors import X2IError

# Built-in commands: name -> "module:function". Imported when the group is built (cheap: no torch).
BUILTIN_COMMANDS = {
    "plugins": "x2i_cli.plugins_cmd:plugins",
    "align": "x2i_cli.align:align",
    "eval-align": "x2i_cli.align:eval_align",
    "generate": "x2i_cli.generate:generate",
    "chat": "x2i_cli.chat:chat",
    "convert": "x2i_cli.convert_cmd:convert",
    "fetch-aligner": "x2i_cli.fetch_aligner_cmd:fetch_aligner",
    "ui": "x2i_cli.ui:ui",
    "train-lightcontrol": "x2i_cli.train_lightcontrol:train_lightcontrol",
    "train-lora": "x2i_cli.train_lora:train_lora",
}


class UserError(click.ClickException):
    """An X2IError shown as one line, exit code 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


class X2IGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except X2IError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise UserError(str(exc)) from exc


def _import(target: str):
    from importlib import import_module

    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


@click.group(cls=X2IGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="x2i", prog_name="x2i")
@click.pass_context
def cli(ctx, debug):
    """x2i: generate images from any prompt (text in any language, images, video, audio)
    with a multimodal LLM aligned to a frozen FLUX-style transformer.

    \b
    Examples:
      x2i generate "a red circle"                     the built-in default world
      x2i generate --encoder qwen2.5-vl-7b --backbone flux-dev --aligner DIR "a cat"
      x2i plugins                                     what is installed
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


for _name, _target in BUILTIN_COMMANDS.items():
    cli.add_command(_import(_target), _name)


def _add_plugin_commands() -> None:
    from x2i_core.plugins import get_registry

    for line in get_registry().add_commands(cli):
        click.echo(f"Warning: a plugin failed to add commands: {line}", err=True)


def main(argv=None):
    """Console-script entry point."""
    _add_plugin_commands()
    return cli.main(args=argv, prog_name="x2i")


if __name__ == "__main__":
    sys.exit(main())

"""Click options built from a config dataclass: each setting's default, type, choices and help are written once,
in the dataclass (training.config.opt), and every trainer's command shares them.

    @click.command()
    @config_options(LoraConfig, exclude=("data",))
    def train_lora(**opts):
        cfg = config_from_options(LoraConfig, opts)

Field metadata read here: help, option ("-o/--output": the names; default --field-name), choices, metavar,
flag_value (an option that may be given bare: --resume = --resume latest), negation (a --x/--no-x pair),
invert (a bare flag that sets the field False: --quiet for progress), multiple, show_default, parse (a field
given as text and parsed into its value, e.g. --term-weights).
"""
from __future__ import annotations

import typing
from dataclasses import MISSING, fields
from typing import Any, Iterable

import click


def _python_type(cls, f) -> type:
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (list, tuple):
        return args[0] if args else str
    return args[0] if args and typing.get_origin(hint) is not None else hint


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def field_option(cls, f) -> Any:
    """One click.option decorator for dataclass field `f` of `cls`."""
    meta = f.metadata
    dashed = "--" + f.name.replace("_", "-")
    names = meta.get("option", dashed).split("/")
    kind = _python_type(cls, f)
    default = _default(f)
    kwargs: dict[str, Any] = {"help": meta.get("help", ""), "show_default": meta.get("show_default", True)}
    if "metavar" in meta:
        kwargs["metavar"] = meta["metavar"]
    if "parse" in meta:  # a structured field given as text (e.g. --term-weights KIND=W,...): parsed in config_values
        return click.option(*names, f.name, default=None, help=kwargs["help"], metavar=meta.get("metavar"))
    if meta.get("invert"):
        return click.option(*names, f.name, is_flag=True, default=False, help=kwargs["help"])
    if kind is bool:
        if "negation" in meta:
            return click.option(f"{names[0]}/--{meta['negation']}", f.name, default=default, **kwargs)
        return click.option(*names, f.name, is_flag=True, default=default, help=kwargs["help"])
    if "choices" in meta:
        kwargs["type"] = click.Choice(meta["choices"])
    elif kind in (int, float):
        kwargs["type"] = kind
    if "flag_value" in meta:
        kwargs.update(is_flag=False, flag_value=meta["flag_value"])
    if meta.get("multiple") or isinstance(default, list):
        kwargs.update(multiple=True, show_default=False)
        default = None
    if default is None or default == "":
        kwargs["show_default"] = False
        default = None
    return click.option(*names, f.name, default=default, **kwargs)


def config_options(cls, *, only: Iterable[str] | None = None, exclude: Iterable[str] = ()):
    """A decorator adding a click option for each field of `cls` (in field order), or those named in `only`."""
    wanted = list(only) if only is not None else None
    chosen = [f for f in fields(cls) if f.name not in set(exclude) and (wanted is None or f.name in wanted)]
    if wanted is not None:
        chosen.sort(key=lambda f: wanted.index(f.name))

    def decorate(command):
        for f in reversed(chosen):  # click lists options in the order decorators were written (outermost first)
            command = field_option(cls, f)(command)
        return command

    return decorate


def config_values(cls, opts: dict[str, Any]) -> dict[str, Any]:
    """The click values of `cls`'s fields as keyword arguments for cls(...): inverted flags flipped, multiple
    options as lists, unset options (None) left at the dataclass default."""
    values = {}
    for f in fields(cls):
        if f.name not in opts:
            continue
        value = opts[f.name]
        if f.metadata.get("invert"):
            value = not value
        elif "parse" in f.metadata:
            value = f.metadata["parse"](value)
        elif isinstance(value, tuple):
            value = list(value)
        elif value is None:
            continue
        values[f.name] = value
    return values

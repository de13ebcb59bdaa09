"""One training infrastructure for every trainer (`x2i align`, `x2i train-lora`, `x2i train-lightcontrol`).

How a trainer plugs in (details in loop.py's docstring):
  * its config subclasses config.TrainingConfig (shared settings, each with its CLI help in field metadata;
    declare new fields with config.opt(default, help, ...));
  * its command gets every option from options.config_options(MyConfig) and builds the config with
    MyConfig(**options.config_values(MyConfig, opts));
  * it subclasses loop.TrainingTask (prepare, stream, check_resume, build, check_loaded, step, state,
    save_final) and calls loop.run_training(cfg, task), which returns a TrainResult.

Modules: accelerator (accelerate setup), checkpoint (atomic save, exact resume), signals (SIGINT/SIGTERM),
logs (CSV/TensorBoard), progress, optim (AdamW, warm-up + cosine), options (dataclass -> click), loop.
Importing this package does not import torch.
"""
from importlib import import_module

from .config import TrainingConfig, opt

_LAZY = {
    "run_training": "x2i_core.training.loop",
    "TrainingTask": "x2i_core.training.loop",
    "StepLoss": "x2i_core.training.loop",
    "TrainResult": "x2i_core.training.loop",
    "config_options": "x2i_core.training.options",
    "config_values": "x2i_core.training.options",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'x2i_core.training' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = ["TrainingConfig", "opt", *_LAZY]

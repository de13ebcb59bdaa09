"""Silence the libraries' own loading bars and notices: x2i's rich progress and one-line errors replace them."""
from __future__ import annotations


def quiet_libraries() -> None:
    """transformers/diffusers logs down to errors, their progress bars off (call inside a command: imports both)."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    # diffusers passes a deprecated argument to huggingface_hub on every hub load: noise, not news
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")

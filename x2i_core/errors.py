"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class X2IError(Exception):
    """Base class for every error caused by input, files, configuration or plugins."""


class InputError(X2IError):
    """A prompt, media file or option that cannot be used."""


class CheckpointError(X2IError):
    """A checkpoint that is missing, corrupt or in the wrong format."""


class IncompatibleError(X2IError):
    """Components that do not fit each other (an AlignNet made for another encoder or backbone)."""


class PluginError(X2IError):
    """A plugin, or a name no plugin registered."""


def first_line(exc: BaseException) -> str:
    """A third-party exception's message cut to its first line (its type name when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__

"""Test-wide settings: the suite is offline by rule, so a stray hub id fails at once instead of retrying; and it
tests x2i's own plugins only, so a third-party plugin installed on the machine cannot change what it sees."""
import os

# Read by huggingface_hub when it is first imported, i.e. after this file: set it before any test module loads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Only the built-in plugins (the distribution "x2i"); tests of third-party loading pass their own value.
os.environ["X2I_PLUGINS"] = "x2i"

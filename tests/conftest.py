"""Test-wide settings: the suite is offline by rule, so a stray hub id fails at once instead of retrying."""
import os

# Read by huggingface_hub when it is first imported, i.e. after this file: set it before any test module loads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

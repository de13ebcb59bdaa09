"""A folder this process cannot write into, for the tests of output checks."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def read_only_dir(tmp_path: Path) -> Path:
    """A read-only folder: a 0555 folder for ordinary users; root writes through mode bits, so /sys for root
    (mounted read-only or refusing new files in containers); skips when neither is read-only here."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys")
    os.close(fd)
    os.unlink(probe)
    pytest.skip("no read-only folder on this machine (running as root with a writable /sys)")

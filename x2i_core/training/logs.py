"""Per-step training logs: a CSV row per optimizer step (every loss term) and optional TensorBoard."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping

from ..errors import InputError

FIXED_COLUMNS = ["step", "loss", "lr", "grad_norm", "skipped_terms", "skipped_step", "seconds"]


class CsvLog:
    """Appends rows; on resume, drops rows past the checkpoint's step so the file matches an unbroken run."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.columns: list[str] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            if rows:
                self.columns, kept = rows[0], [r for r in rows[1:] if r and int(r[0]) <= resume_step]
                with open(self.path, "w", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerows([self.columns, *kept])
        elif self.path.exists():
            self.path.unlink()

    def write(self, row: Mapping[str, float | int]) -> None:
        """One row; the header (fixed columns, then terms in capture order) is written with the first row."""
        if self.columns is None:
            self.columns = FIXED_COLUMNS + [k for k in row if k not in FIXED_COLUMNS]
            with open(self.path, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(self.columns)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self.columns])


def _fmt(value) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def read_csv_log(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV log as dicts (tests and notebooks)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class TensorBoardLog:
    """Scalars per step under OUTPUT/tensorboard; InputError when tensorboard is not installed."""

    def __init__(self, folder: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:
            raise InputError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(str(folder))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """One scalar per name at this step."""
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()

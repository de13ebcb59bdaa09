"""A rich progress bar for the training loop."""
from __future__ import annotations


class Progress:
    """A rich progress bar labelled `label` on the main process (a no-op elsewhere or when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int, label: str = "train"):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self.bar = RichProgress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                    TextColumn("{task.fields[info]}"))
            self.task = self.bar.add_task(label, total=total, completed=start, info="")

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def update(self, step: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False

"""A live progress bar for runs (rich): round, accuracy, consensus, ETA."""
from __future__ import annotations

import sys
from typing import Any

from rich.progress import BarColumn, Progress as _Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Progress:
    """Context manager; `update(round, metrics)` after each evaluated round. Silent when quiet."""

    def __init__(self, cfg: Any, title: str, *, quiet: bool = False, start: int = 0):
        self.total = cfg.rounds
        self.quiet = quiet
        self.title = title
        self.start = start
        self._bar: _Progress | None = None

    def __enter__(self) -> "Progress":
        if not self.quiet:
            self._bar = _Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                transient=not sys.stderr.isatty(), redirect_stdout=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.total, completed=self.start, info="")
        return self

    def update(self, round_: int, row: dict[str, Any]) -> None:
        if self._bar is not None:
            info = f"acc {row['test_acc']:.3f}  consensus {row['consensus']:.2e}"
            self._bar.update(self._task, completed=round_, info=info)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

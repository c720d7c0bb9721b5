"""The live view of a run on the terminal: a rich progress bar over the schedule with running
figures (sent, in flight, ok, failed, output tokens/s). Without a terminal (CI, a pipe) it prints
one plain line every few seconds instead. Called by the CLI through the runner's `progress`."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeElapsedColumn

from .runner import Progress


class LiveView:
    def __init__(self, duration: float, total: int, console: Console | None = None, every: float = 5.0):
        self.console = console or Console(stderr=True)
        self.duration = duration
        self.total = total
        self.every = every
        self._last_line = 0.0
        self._bar: Bar | None = None
        self._task: Any = None

    def __enter__(self) -> "LiveView":
        if self.console.is_terminal:
            self._bar = Bar(TextColumn("[bold]inject"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TimeElapsedColumn(), TextColumn("{task.fields[figures]}"), console=self.console,
                            transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task("inject", total=self.total, figures="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    @staticmethod
    def figures(p: Progress) -> str:
        rate = p.output_tokens / p.elapsed if p.elapsed > 0 else 0.0
        text = (f"sent {p.sent}/{p.total}, in flight {p.in_flight}, ok {p.ok}, failed {p.failed}, "
                f"{rate:,.0f} output tok/s")
        return text + (" (stopping)" if p.stopping else "")

    def __call__(self, p: Progress) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=p.finished, total=p.total, figures=self.figures(p))
            return
        now = time.monotonic()
        if now - self._last_line >= self.every or p.finished == p.total or p.stopping:
            self._last_line = now
            self.console.print(f"inject: {p.elapsed:5.1f} s: {self.figures(p)}", markup=False, highlight=False)

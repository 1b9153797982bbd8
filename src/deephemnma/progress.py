"""Progress bars (rich) for long loops; silent when disabled or not on a terminal-ish run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Silent:
    def advance(self, amount: float = 1) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, task) -> None:
        self._progress, self._task = progress, task

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task, amount)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[_Bar | _Silent]:
    """A bar with count, rate-based ETA and elapsed time; ``.advance(n)`` after each step."""
    if not enabled:
        yield _Silent()
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))


class StatusLog:
    """One status line at a time on stderr, tagged ``[prefix]``; silent when disabled.
    For long steps that have stages rather than a count (fitting levels, rounds)."""

    def __init__(self, prefix: str, enabled: bool = True) -> None:
        self._prefix = prefix
        self._console = None
        if enabled:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)

    def line(self, text: str) -> None:
        if self._console is not None:
            self._console.print(f"[dim]\\[{self._prefix}][/dim] {text}")

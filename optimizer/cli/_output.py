"""Terminal-aware output for every command: consoles, one-line messages and progress.

On a terminal, tables fit the window and progress is a live bar. Anywhere else (a pipe, a log file, CI)
nothing is wrapped or cut: tables keep their natural width, every message is one line however long its
paths are, and progress is written as plain log lines, so log collectors, ``grep`` and CI annotations see
whole lines. Errors and notes are single lines on a terminal too (the terminal may fold them visually,
but no line break is inserted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.markup import escape

__all__ = ["ProgressReporter", "StreamConsole", "console", "err_console", "escape", "note"]

#: The width a console reports when its stream is not a terminal: wider than any line the tool prints, so
#: rich never wraps, folds or shortens table cells there.
UNLIMITED_WIDTH = 1_000_000


class StreamConsole(Console):
    """A rich console that only measures the terminal when it writes to one.

    Rich otherwise assumes 80 columns (or ``$COLUMNS``) for pipes and files and wraps text and squeezes
    tables to fit, which splits error lines and drops table columns in logs.
    """

    @property
    def size(self) -> ConsoleDimensions:
        if self.is_terminal:
            return super().size
        return ConsoleDimensions(UNLIMITED_WIDTH, 25)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = StreamConsole()
err_console = StreamConsole(stderr=True)


def note(message: str, *, label: str = "note", style: str = "yellow", stream: Console | None = None) -> None:
    """Print ``label: message`` as one line (``message`` is plain text, never markup)."""
    target = stream or err_console
    target.print(f"[{style}]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)


class ProgressReporter:
    """Progress of a batch: a live bar on a terminal, throttled plain log lines elsewhere.

    Use as a context manager and call :meth:`update` as items finish. Off a terminal, a line
    ``LABEL: DONE/TOTAL DETAIL`` is written for the first item, the last one, and in between at most once
    per ``interval`` seconds (read from ``clock``, injectable for tests). Progress always goes to stderr, so
    stdout stays parseable (``--format json``).
    """

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        transient: bool = True,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        stream: Console | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.detail = ""
        self._stream = stream or err_console
        self._interval = interval
        self._clock = clock
        self._last_line: float | None = None
        self._last_written: tuple[int, int | None, str] | None = None
        self._bar: Any = None
        self._task: Any = None
        if self._stream.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn(escape(label)),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=self._stream,
                transient=transient,
            )
            self._task = self._bar.add_task("", total=total)

    @property
    def live(self) -> bool:
        """Whether a live bar is shown (a terminal) rather than log lines."""
        return self._bar is not None

    def __enter__(self) -> ProgressReporter:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
        elif exc_type is None and self.done and self._last_written != (self.done, self.total, self.detail):
            self._line()  # the final state, if throttling held it back

    def update(self, done: int, total: int | None = None, detail: str = "") -> None:
        """``done`` items of ``total`` (None: unknown) are finished; ``detail`` describes the latest."""
        self.done = done
        if total is not None:
            self.total = total
        self.detail = detail
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total, description=escape(detail))
            return
        if self._last_written == (done, self.total, detail):
            return  # nothing new (callers that poll report the same state repeatedly)
        now = self._clock()
        finished = self.total is not None and done >= self.total
        if self._last_line is None or finished or now - self._last_line >= self._interval:
            self._line()

    def note(self, text: str) -> None:
        """A message line (printed above the bar on a terminal)."""
        self._stream.print(escape(text), highlight=False, soft_wrap=True)

    def _line(self) -> None:
        self._last_line = self._clock()
        self._last_written = (self.done, self.total, self.detail)
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        text = f"{self.label}: {count}" + (f" {self.detail}" if self.detail else "")
        self._stream.print(escape(text), highlight=False, soft_wrap=True)

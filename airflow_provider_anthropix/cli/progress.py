"""Progress on standard error: a live bar on a terminal (rich), plain lines otherwise.

rich comes with Airflow (``apache-airflow-core`` depends on it); it is imported only when a
bar is drawn, so listing batches never pays for it. In a pipe or a CI log a live bar would
be noise, so a line is printed when something changes instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TextIO


class Bar:
    """A bar of ``completed`` out of ``total`` (None: unknown) with a short status text."""

    def __init__(
        self, label: str, total: int | None, unit: str, stream: TextIO | None = None, min_interval: float = 0.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self._printed_at = float("-inf")
        self._pending = ""
        self.label = label
        self.total = total
        self.unit = unit
        self._live: Any = None
        self._task: Any = None
        self._last_line = ""

    def __enter__(self) -> Bar:
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._live = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._live.start()
            self._task = self._live.add_task(self.label, total=self.total, status="")
        return self

    def update(self, completed: int, total: int | None = None, status: str = "") -> None:
        if total is not None:
            self.total = total
        if self._live is not None:
            self._live.update(self._task, completed=completed, total=self.total, status=status)
            return
        shown = f"{completed:,}/{self.total:,}" if self.total is not None else f"{completed:,}"
        line = f"{self.label}: {shown} {self.unit} {status}".rstrip()
        if line == self._last_line:
            return
        now = time.monotonic()
        if now - self._printed_at < self.min_interval:
            self._pending = line
            return
        self._print(line, now)

    def _print(self, line: str, now: float) -> None:
        print(line, file=self.stream, flush=True)
        self._last_line = line
        self._printed_at = now
        self._pending = ""

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
        elif self._pending:
            self._print(self._pending, time.monotonic())


def counted(chunks: Iterable[bytes], bar: Bar, every: int = 1 << 20) -> Iterator[bytes]:
    """Pass ``chunks`` through unchanged, moving ``bar`` by result lines (a newline each)."""
    lines = 0
    size = 0
    shown = 0
    for chunk in chunks:
        lines += chunk.count(b"\n")
        size += len(chunk)
        if size - shown >= every:
            bar.update(lines, status=f"{size / 1e6:,.1f} MB")
            shown = size
        yield chunk
    bar.update(lines, status=f"{size / 1e6:,.1f} MB")

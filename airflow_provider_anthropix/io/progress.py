"""Progress a person can read in the task log: lines, megabytes, throughput, every few seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

_MB = 1_000_000


class Progress:
    """Call :meth:`update` as often as you like; it logs at most once per ``interval`` seconds."""

    def __init__(
        self,
        *,
        expected_lines: int | None = None,
        interval: float = 5.0,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        clock: Callable[[], float] = time.monotonic,
        label: str = "results",
    ) -> None:
        self.expected_lines = expected_lines
        self.interval = interval
        self.log = logger or logging.getLogger(__name__)
        self.clock = clock
        self.label = label
        self.started = clock()
        self._next = self.started + interval
        self.lines = 0
        self.bytes = 0

    def update(self, lines: int, nbytes: int) -> None:
        self.lines += lines
        self.bytes += nbytes
        now = self.clock()
        if now >= self._next:
            self._next = now + self.interval
            self.log.info("%s", self.describe(now))

    def describe(self, now: float | None = None) -> str:
        elapsed = max((now if now is not None else self.clock()) - self.started, 1e-9)
        of = f" / {self.expected_lines:,}" if self.expected_lines is not None else ""
        return (
            f"{self.lines:,}{of} {self.label}, {self.bytes / _MB:,.1f} MB, "
            f"{self.bytes / _MB / elapsed:,.1f} MB/s, {elapsed:,.1f} s"
        )

    def done(self) -> None:
        self.log.info("done: %s", self.describe())

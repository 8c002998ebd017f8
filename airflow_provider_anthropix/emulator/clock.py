"""The emulator's notion of now: wall time plus an offset tests can push forward.

Expiry (24 h) and archiving (29 days) cannot be waited for in a test; moving this clock
lets a test reach them in an instant while everything else keeps reading one clock.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone


class Clock:
    """Seconds since the epoch, shifted by :meth:`advance`."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current emulated time in seconds since the epoch."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the emulated time forward (never backward: batches only age)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds

    def reset(self) -> None:
        """Go back to wall time."""
        with self._lock:
            self._offset = 0.0


def rfc3339(seconds: float) -> str:
    """Format like the API: RFC 3339, microseconds, ``Z``."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

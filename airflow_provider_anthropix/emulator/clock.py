"""The emulator's notion of now: wall time plus an offset tests can push forward.

Expiry (24 h) and archiving (29 days) cannot be waited for in a test; moving this clock
lets a test reach them in an instant while everything else keeps reading one clock.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timezone

#: The furthest the clock may be pushed (about 100 years): far enough for any expiry or
#: archive test, near enough that timestamps still format (datetime stops at year 9999).
MAX_OFFSET = 100 * 366 * 86_400.0


class Clock:
    """Seconds since the epoch, shifted by :meth:`advance`."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current emulated time in seconds since the epoch."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the emulated time forward (never backward: batches only age).

        A NaN, infinite or huge value would poison every later timestamp (each create
        would fail to format its ``created_at``), so it is refused here, for the HTTP
        admin call and the Python handle alike.
        """
        if not math.isfinite(seconds):
            raise ValueError(f"the clock advances by a finite number of seconds; got {seconds}")
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            if self._offset + seconds > MAX_OFFSET:
                raise ValueError(
                    f"the clock may move at most {MAX_OFFSET:,.0f} s (about 100 years) in all; "
                    f"{self._offset:,.0f} s used, {seconds:g} s asked"
                )
            self._offset += seconds

    def reset(self) -> None:
        """Go back to wall time."""
        with self._lock:
            self._offset = 0.0


def rfc3339(seconds: float) -> str:
    """Format like the API: RFC 3339, microseconds, ``Z``."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

"""Resuming a results download that broke mid-way, shared by both clients.

Results are hundreds of megabytes; a reset at 90% should not mean starting over, and
must never mean a gap or a duplicate. We ask for the rest with ``Range: bytes=N-``. A
server that honours it answers 206 from byte N; one that ignores it answers 200 with the
whole body, and we drop the first N bytes ourselves. Either way the caller's stream is
byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import re

from airflow_provider_anthropix.api.errors import AnthropixConnectionError, AnthropixError
from airflow_provider_anthropix.api.retry import RetryPolicy

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-\d+/(?:\d+|\*)")
#: Breaks of one results stream we ride out, at least, whatever the connection's max_retries.
MIN_STREAM_RESUMES = 3


class Skipper:
    """Drops the first ``remaining`` bytes of a stream that restarted from an earlier point."""

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining

    def trim(self, chunk: bytes) -> bytes:
        if self.remaining <= 0:
            return chunk
        if len(chunk) <= self.remaining:
            self.remaining -= len(chunk)
            return b""
        chunk = chunk[self.remaining :]
        self.remaining = 0
        return chunk


class ResumeState:
    """Bytes delivered so far and resumes spent for one results download."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.received = 0
        self.resumes = 0
        self.max_resumes = max(MIN_STREAM_RESUMES, policy.max_retries)

    def range_headers(self) -> dict[str, str]:
        return {"range": f"bytes={self.received}-"} if self.received else {}

    def start(self, status: int, content_range: str | None) -> Skipper:
        """Decide how many leading bytes of the new response were already delivered."""
        if self.received == 0:
            return Skipper(0)
        if status == 206 and content_range:
            match = _CONTENT_RANGE.match(content_range.strip())
            if match is None:
                raise AnthropixConnectionError(f"results: unreadable content-range {content_range!r}")
            start = int(match.group(1))
            if start > self.received:
                raise AnthropixConnectionError(
                    f"results: server resumed at byte {start}, after the {self.received} bytes we have"
                )
            return Skipper(self.received - start)
        return Skipper(self.received)

    def next_delay(self, error: AnthropixError) -> float:
        """Seconds to wait before reopening the stream, or re-raise ``error`` when the budget is spent."""
        if self.resumes >= self.max_resumes:
            raise error
        self.resumes += 1
        return self.policy.backoff(self.resumes - 1)

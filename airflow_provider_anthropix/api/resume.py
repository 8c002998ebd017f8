"""Resuming a results download that broke mid-way, shared by both clients.

Results are hundreds of megabytes; a reset at 90% should not mean starting over, and
must never mean a gap or a duplicate. We ask for the rest with ``Range: bytes=N-``. A
server that honours it answers 206 from byte N; one that ignores it answers 200 with the
whole body, and we drop the first N bytes ourselves. Either way the caller's stream is
byte-identical to an uninterrupted one.

That skipping is only right if the server sends the same bytes again. Results come "in no
particular order", so the first answer's ``etag`` and length are kept: a resume sends
``If-Range`` with the etag, and an answer whose etag or length differs raises
:class:`ResultsChangedError` instead of splicing two different orders together. Results are
asked for with ``accept-encoding: identity`` so byte offsets mean the same on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from airflow_provider_anthropix.api.errors import AnthropixConnectionError, AnthropixError, ResultsChangedError
from airflow_provider_anthropix.api.retry import RetryPolicy

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-\d+/(\d+|\*)")
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
        self._skipper = Skipper(0)

    etag: str | None = None
    total: int | None = None

    @property
    def complete(self) -> bool:
        """Every byte of a known-length body has been delivered (a break after the last byte)."""
        return self.total is not None and self.received >= self.total

    def request_headers(self) -> dict[str, str]:
        headers = {"accept-encoding": "identity"}
        if self.received:
            headers["range"] = f"bytes={self.received}-"
            if self.etag:
                headers["if-range"] = self.etag
        return headers

    def start(self, status: int, headers: Mapping[str, str]) -> Skipper:
        """Decide how many leading bytes of the new response were already delivered (:meth:`take` drops them)."""
        self._skipper = self._skipper_for(status, headers)
        return self._skipper

    def take(self, chunk: bytes) -> bytes:
        """The part of a chunk of the current response the caller has not had yet, counted as delivered."""
        chunk = self._skipper.trim(chunk)
        self.received += len(chunk)
        return chunk

    def _skipper_for(self, status: int, headers: Mapping[str, str]) -> Skipper:
        etag = headers.get("etag")
        content_range = headers.get("content-range")
        total = _total_length(status, headers.get("content-length"), content_range)
        if self.received == 0:
            self.etag, self.total = etag, total
            return Skipper(0)
        if (self.etag and etag and etag != self.etag) or (self.total and total and total != self.total):
            raise ResultsChangedError(
                f"results changed between two parts of one download (etag {self.etag} -> {etag}, "
                f"{self.total} -> {total} bytes); the download must start over"
            )
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


def _total_length(status: int, content_length: str | None, content_range: str | None) -> int | None:
    """The whole body's length: content-length of a 200, the total of a 206's content-range."""
    if status == 206 and content_range:
        match = _CONTENT_RANGE.match(content_range.strip())
        if match and match.group(2) != "*":
            return int(match.group(2))
        return None
    if status == 200 and content_length and content_length.isdigit():
        return int(content_length)
    return None

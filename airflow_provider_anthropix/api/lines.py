"""Split a byte stream into JSONL lines without holding more than one partial line."""

from __future__ import annotations

import json
from typing import Any


class LineSplitter:
    """Feed chunks in, get complete ``\\n``-terminated lines out (without the newline)."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._tail + chunk if self._tail else chunk
        parts = data.split(b"\n")
        self._tail = parts.pop()
        return [part for part in parts if part.strip()]

    def finish(self) -> list[bytes]:
        """The last line when the stream did not end with a newline."""
        tail, self._tail = self._tail, b""
        return [tail] if tail.strip() else []


def parse_result_line(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError(f"a results line is not a JSON object: {line[:120]!r}")
    return value


class ResultLines:
    """Chunks of a results stream in, parsed result objects out: the line handling of both clients."""

    def __init__(self) -> None:
        self._splitter = LineSplitter()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        return [parse_result_line(line) for line in self._splitter.feed(chunk)]

    def finish(self) -> list[dict[str, Any]]:
        """The last result when the stream did not end with a newline."""
        return [parse_result_line(line) for line in self._splitter.finish()]

"""Cut a chunked byte stream at line ends: pieces of whole lines, then the lines of a piece.

Chunks from the network end anywhere, often mid-line. Working on pieces of whole lines lets
the export decode many lines per call (msgspec's ``decode_lines``) and keep every byte as
received: the pieces, concatenated, are exactly the stream. Splitting copies nothing large:
the body of a chunk is handed on as a ``memoryview`` of it; only the one line that straddles
two chunks is stitched together (cutting a piece into its lines copies it once). The
clients' parsed results stream (:class:`ResultLines`) and the io pipeline both cut lines
here, so there is one splitter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

Piece = bytes | memoryview


class BlockSplitter:
    """Feed chunks, get back pieces of complete lines; a partial last line waits for the next chunk."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[Piece]:
        end = chunk.rfind(b"\n") + 1
        if end == 0:
            self._tail += chunk
            return []
        pieces: list[Piece] = []
        start = 0
        if self._tail:
            start = chunk.find(b"\n") + 1
            pieces.append(self._tail + chunk[:start])
        if end > start:
            pieces.append(memoryview(chunk)[start:end] if start or end < len(chunk) else chunk)
        self._tail = chunk[end:]
        return pieces

    def finish(self) -> bytes:
        """What is left when the stream ends: a last line without its newline, or ``b""``."""
        tail, self._tail = self._tail, b""
        return tail


def lines_of(block: Piece, expected: int | None = None) -> list[bytes]:
    """The non-blank lines of ``block``, without their newlines: the lines msgspec's ``decode_lines`` decodes.

    :param expected: how many results the block decoded to, to cross-check: a mismatch (two
        JSON values on one line, which ``decode_lines`` reads as two) raises ``ValueError``
        instead of pairing lines with the wrong results. Blank lines are always dropped first,
        so a blank line cannot make up for a missing one.
    """
    lines = [line for line in bytes(block).split(b"\n") if line and not line.isspace()]
    if expected is not None and len(lines) != expected:
        raise ValueError(f"a block of {expected} decoded results has {len(lines)} lines")
    return lines


def parse_result_line(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError(f"a results line is not a JSON object but a JSON {type(value).__name__} ({len(line)} bytes)")
    return value


class ResultLines:
    """Chunks of a results stream in, parsed result objects out: the line handling of both clients."""

    def __init__(self) -> None:
        self._splitter = BlockSplitter()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        return [parse_result_line(line) for piece in self._splitter.feed(chunk) for line in lines_of(piece)]

    def finish(self) -> list[dict[str, Any]]:
        """The last result when the stream did not end with a newline."""
        return [parse_result_line(line) for line in lines_of(self._splitter.finish())]


def line_blocks(chunks: Iterable[bytes]) -> Iterator[Piece]:
    """Pieces of complete lines from a stream of chunks, the last line included even without its newline."""
    splitter = BlockSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    tail = splitter.finish()
    if tail.strip():
        yield tail

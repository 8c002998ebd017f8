"""Cut a chunked byte stream at line ends, so each piece holds only complete lines; cut a piece into its lines.

Chunks from the network end anywhere, often mid-line. Working on pieces of whole lines
lets the summariser decode many lines per call (msgspec's ``decode_lines``) and lets the
writers keep every byte as received: the pieces, concatenated, are exactly the stream.

Nothing large is copied: the body of a chunk is handed on as a ``memoryview`` of it; only
the one line that straddles two chunks is stitched together.
"""

from __future__ import annotations

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

    :param expected: how many lines the block decoded to, to cross-check (a mismatch raises
        ``ValueError``). With it, a block without blank lines (the usual case) is split in one
        pass and never filtered.
    """
    lines = bytes(block).split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if expected is None or len(lines) != expected:
        lines = [line for line in lines if line.strip()]
    if expected is not None and len(lines) != expected:
        raise ValueError(f"a block of {expected} decoded results has {len(lines)} lines")
    return lines

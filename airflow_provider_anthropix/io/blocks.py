"""Cut a chunked byte stream at line ends, so each block holds only complete lines.

Chunks from the network end anywhere, often mid-line. Working on blocks of whole lines
lets the summariser decode many lines per call (msgspec's ``decode_lines``) and lets the
writers keep every byte as received: the blocks, concatenated, are exactly the stream.
"""

from __future__ import annotations


class BlockSplitter:
    """Feed chunks, get back the largest prefix ending in ``\\n``; the rest waits for more."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n") + 1
        if end == 0:
            self._tail = data
            return b""
        if end == len(data):
            self._tail = b""
            return data
        self._tail = data[end:]
        return data[:end]

    def finish(self) -> bytes:
        """What is left when the stream ends: a last line without its newline, or ``b""``."""
        tail, self._tail = self._tail, b""
        return tail

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for their newline."""
        return len(self._tail)

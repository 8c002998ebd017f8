"""A write-only stream that hashes and counts what it stores, in large writes.

Every object we publish is listed in the manifest with its size and sha256, computed
here while writing, so nothing is read back. Small writes (one line, one Parquet page)
are gathered into large ones: object stores and hashlib are fastest with megabytes,
and both release the GIL for big buffers.
"""

from __future__ import annotations

import hashlib
from typing import IO, Any

#: Gather small writes up to this many bytes before passing them on.
DEFAULT_BUFFER_BYTES = 1 << 20
#: Writes at least this large are passed on at once (no copy into the buffer).
DIRECT_WRITE_BYTES = 64 << 10


class HashingSink:
    """Wraps a binary file; ``write`` hashes (sha256) and counts bytes. Closing closes the file.

    It offers the small file API that pyarrow's writer asks of a Python file object.
    """

    def __init__(self, raw: IO[bytes] | Any, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._buffer_bytes = buffer_bytes
        self.size = 0
        self.closed = False
        self._discarded = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._discarded:
            return len(data)  # late writes of an abandoned writer (e.g. a Parquet footer) go nowhere
        if self.closed:
            raise ValueError("write to a closed sink")
        length = len(data)
        if not length:
            return 0
        self.size += length
        if length >= min(DIRECT_WRITE_BYTES, self._buffer_bytes):
            self._drain()
            self._store(data)
            return length
        self._pending.append(bytes(data))
        self._pending_bytes += length
        if self._pending_bytes >= self._buffer_bytes:
            self._drain()
        return length

    def _drain(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending = []
            self._pending_bytes = 0
            self._store(data)

    def _store(self, data: bytes | bytearray | memoryview) -> None:
        self._sha.update(data)
        self._raw.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._drain()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        """Write what is gathered and close the file (which, on object stores, uploads the last part)."""
        if self.closed:
            return
        self._drain()
        self.closed = True
        self._raw.close()

    def discard(self) -> None:
        """Close without caring about errors: used when the export is abandoned."""
        self.closed = True
        self._discarded = True
        self._pending = []
        # An object store's file would upload what it holds on close(); discard() aborts that.
        for method in ("discard", "close"):
            action = getattr(self._raw, method, None)
            if action is None:
                continue
            try:
                action()
            except Exception:  # the staging folder is removed next anyway
                continue

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

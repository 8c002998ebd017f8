"""In-memory files for the writers' tests."""

from __future__ import annotations

import io


class MemoryFile(io.BytesIO):
    """A BytesIO that keeps its value after close, and counts the writes that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.data = b""

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)

    def close(self) -> None:
        self.data = self.getvalue()
        super().close()

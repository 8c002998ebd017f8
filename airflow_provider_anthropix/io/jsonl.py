"""JSONL output, plain or gzip: the bytes of every line exactly as the API sent them."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from airflow_provider_anthropix.io.sink import HashingSink

#: zlib level for gzip output: 6 (zlib's default) compresses results ~10x at ~10x the speed of 9.
DEFAULT_GZIP_LEVEL = 6


@dataclass(frozen=True)
class FileInfo:
    """What the manifest says about one published object."""

    name: str
    size: int
    lines: int
    sha256: str
    result_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "size": self.size, "lines": self.lines, "sha256": self.sha256}
        if self.result_type is not None:
            data["result_type"] = self.result_type
        return data


class JsonlWriter:
    """Appends blocks of complete lines; with ``gzip=True`` it writes one deterministic gzip member.

    The gzip header carries no name and a zero mtime, so the same results give the same
    object (and sha256) on every run.
    """

    def __init__(
        self,
        name: str,
        sink: HashingSink,
        *,
        gzip: bool = False,
        gzip_level: int = DEFAULT_GZIP_LEVEL,
        result_type: str | None = None,
    ) -> None:
        self.name = name
        self.result_type = result_type
        self._sink = sink
        self._compressor = zlib.compressobj(gzip_level, zlib.DEFLATED, 31) if gzip else None
        self.lines = 0

    def write(self, block: bytes | memoryview, lines: int) -> None:
        """Store ``block`` (complete lines as received) holding ``lines`` results."""
        self.lines += lines
        if self._compressor is None:
            self._sink.write(block)
        else:
            self._sink.write(self._compressor.compress(block))

    def close(self) -> FileInfo:
        if self._compressor is not None:
            self._sink.write(self._compressor.flush())
        self._sink.close()
        return FileInfo(self.name, self._sink.size, self.lines, self._sink.sha256, self.result_type)

    def discard(self) -> None:
        self._sink.discard()

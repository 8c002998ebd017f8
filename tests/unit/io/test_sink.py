"""The hashing sink under every writer: bytes passed through whole, counted, digested, small writes gathered."""

from __future__ import annotations

import hashlib

import pytest

from airflow_provider_anthropix.io.sink import HashingSink
from tests.support.files import MemoryFile


def test_sink_hashes_counts_and_gathers_small_writes() -> None:
    raw = MemoryFile()
    sink = HashingSink(raw, buffer_bytes=1000)
    pieces = [bytes([i % 256]) * 10 for i in range(500)]
    for piece in pieces:
        sink.write(piece)
    sink.close()
    expected = b"".join(pieces)
    assert raw.data == expected
    assert sink.size == len(expected)
    assert sink.sha256 == hashlib.sha256(expected).hexdigest()
    assert raw.writes <= len(expected) // 1000 + 1
    with pytest.raises(ValueError, match="closed"):
        sink.write(b"x")

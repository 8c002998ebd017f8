"""The JSONL writer: blocks stored as received, plain or gzip (deterministic), with size, lines and digest."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from airflow_provider_anthropix.io.jsonl import JsonlWriter
from airflow_provider_anthropix.io.sink import HashingSink
from tests.support.files import MemoryFile
from tests.support.payloads import mixed_results


@pytest.mark.smoke
def test_jsonl_writer_stores_blocks_as_received() -> None:
    data = mixed_results(300)
    raw = MemoryFile()
    writer = JsonlWriter("results.jsonl", HashingSink(raw))
    half = data.index(b"\n", len(data) // 2) + 1
    writer.write(data[:half], data[:half].count(b"\n"))
    writer.write(data[half:], data[half:].count(b"\n"))
    info = writer.close()
    assert raw.data == data
    assert (info.size, info.lines, info.sha256) == (len(data), 300, hashlib.sha256(data).hexdigest())


def test_gzip_output_decompresses_to_the_stream_and_is_deterministic() -> None:
    data = mixed_results(500, padding=200)
    outputs = []
    for _ in range(2):
        raw = MemoryFile()
        writer = JsonlWriter("results.jsonl.gz", HashingSink(raw), gzip=True)
        writer.write(data, 500)
        info = writer.close()
        outputs.append((raw.data, info))
    (first, info), (second, _) = outputs
    assert first == second  # no name or mtime in the header
    assert gzip.decompress(first) == data
    assert info.sha256 == hashlib.sha256(first).hexdigest()
    assert info.size == len(first) < len(data) // 3

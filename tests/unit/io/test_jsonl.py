"""Writers: the hashing sink, JSONL (plain and gzip) and Parquet, on in-memory files."""

from __future__ import annotations

import gzip
import hashlib
import io
import json

import pytest

from airflow_provider_anthropix.io.jsonl import JsonlWriter
from airflow_provider_anthropix.io.sink import HashingSink
from airflow_provider_anthropix.io.summary import Summariser
from tests.support.payloads import mixed_results, result_line


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


def test_parquet_schema_rows_and_row_groups() -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from airflow_provider_anthropix.io.parquet import COLUMNS, ParquetWriter

    data = mixed_results(250) + result_line("x-last", "errored", error_type="invalid_request_error").rstrip(b"\n")
    raw = MemoryFile()
    writer = ParquetWriter("results.parquet", HashingSink(raw), row_group_rows=100)
    blocks = [data[: data.index(b"\n", 20_000) + 1]]
    blocks.append(data[len(blocks[0]) :])
    for block in blocks:
        writer.write(block, len(Summariser().decode_block(block)))
    info = writer.close()
    assert info.lines == 251
    assert info.sha256 == hashlib.sha256(raw.data).hexdigest()
    parquet = pq.ParquetFile(io.BytesIO(raw.data))
    assert tuple(parquet.schema_arrow.names) == COLUMNS
    assert parquet.metadata.num_rows == 251
    groups = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
    assert groups == [100, 100, 51]
    table = parquet.read()
    rows = table.to_pylist()
    # The raw column is the stream, line for line.
    assert "\n".join(row["raw"] for row in rows).encode() == data.rstrip(b"\n")
    first = rows[0]
    assert first["custom_id"] == "req-0"
    assert first["result_type"] == "succeeded"
    assert first["text"] == "answer 0"
    assert first["stop_reason"] == "end_turn"
    assert (first["input_tokens"], first["output_tokens"]) == (10, 5)
    assert first["error_type"] is None
    last = rows[-1]
    assert (last["result_type"], last["error_type"]) == ("errored", "invalid_request_error")
    assert last["error_message"] == "invalid_request_error for x-last"
    assert last["text"] is None and last["input_tokens"] is None
    assert json.loads(rows[9]["raw"])["result"]["type"] == "errored"

"""The Parquet writer: its schema, one row per result line, row groups, and the raw line kept."""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from airflow_provider_anthropix.io.sink import HashingSink
from airflow_provider_anthropix.io.summary import Summariser
from tests.support.files import MemoryFile
from tests.support.payloads import mixed_results, result_line


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

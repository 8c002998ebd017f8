"""Parquet output (optional extra ``parquet``: pyarrow): one row per result, in row groups.

Columns: ``custom_id``, ``result_type``, ``model``, ``text`` (the first text block of a
succeeded message), ``stop_reason``, the four token counts, ``error_type``,
``error_message`` and ``raw`` (the line exactly as received, so nothing is lost). Rows are
gathered up to ``row_group_rows`` and then written as one row group, so memory holds one
row group at a time however large the batch.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from airflow_provider_anthropix.api.lines import lines_of
from airflow_provider_anthropix.io.jsonl import FileInfo
from airflow_provider_anthropix.io.result_line import ROW_DECODER
from airflow_provider_anthropix.io.sink import HashingSink

if TYPE_CHECKING:
    import pyarrow

#: Rows per row group: about 10 MB of ~1 KB results, a good read unit for engines.
DEFAULT_ROW_GROUP_ROWS = 10_000
DEFAULT_PARQUET_CODEC = "zstd"
PARQUET_CODECS = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")


#: Few distinct values: dictionary-encoded. Text-like columns are not (a dictionary of
#: unique strings only costs memory and time).
DICTIONARY_COLUMNS = ("result_type", "model", "stop_reason", "error_type")

COLUMNS = (
    "custom_id",
    "result_type",
    "model",
    "text",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "error_type",
    "error_message",
    "raw",
)


def import_pyarrow() -> Any:
    """pyarrow, or an error that says which extra to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("format='parquet' needs pyarrow: pip install 'airflow-provider-anthropix[parquet]'") from exc
    return pyarrow


def parquet_schema() -> pyarrow.Schema:
    pa = import_pyarrow()
    text, count = pa.string(), pa.int64()
    return pa.schema(
        [
            ("custom_id", text),
            ("result_type", text),
            ("model", text),
            ("text", text),
            ("stop_reason", text),
            ("input_tokens", count),
            ("output_tokens", count),
            ("cache_creation_input_tokens", count),
            ("cache_read_input_tokens", count),
            ("error_type", text),
            ("error_message", text),
            ("raw", text),
        ]
    )


class ParquetWriter:
    """Turns blocks of result lines into Parquet row groups on a :class:`HashingSink`."""

    def __init__(
        self,
        name: str,
        sink: HashingSink,
        *,
        codec: str = DEFAULT_PARQUET_CODEC,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        result_type: str | None = None,
    ) -> None:
        pa = import_pyarrow()
        if codec not in PARQUET_CODECS:
            raise ValueError(f"unknown parquet codec {codec!r}; use one of {', '.join(PARQUET_CODECS)}")
        self.name = name
        self.result_type = result_type
        self._pa = pa
        self._sink = sink
        self._schema = parquet_schema()
        self._writer = pa.parquet.ParquetWriter(
            sink, self._schema, compression=codec, use_dictionary=list(DICTIONARY_COLUMNS)
        )
        self._row_group_rows = max(1, row_group_rows)
        self._columns: list[list[Any]] = [[] for _ in COLUMNS]
        self._tables: list[pyarrow.Table] = []
        self._pending = 0
        self.lines = 0

    def write(self, block: bytes | memoryview, lines: int) -> None:
        """Add the rows of ``block`` (complete result lines); ``lines`` is how many it holds."""
        block = bytes(block)
        rows = ROW_DECODER.decode_lines(block)
        if len(rows) != lines:
            raise ValueError(f"parquet: a block of {lines} results decoded to {len(rows)} rows")
        raw_lines = lines_of(block, len(rows))
        (c_id, c_type, c_model, c_text, c_stop, c_in, c_out, c_cw, c_cr, c_etype, c_emsg, c_raw) = self._columns
        for row, raw in zip(rows, raw_lines, strict=True):
            result = row.result
            message = result.message
            c_id.append(row.custom_id)
            c_type.append(result.type)
            c_raw.append(raw)
            if message is not None:
                c_model.append(message.model or None)
                c_text.append(next((b.text for b in message.content if b.type == "text"), None))
                c_stop.append(message.stop_reason)
                usage = message.usage
                if usage is not None:
                    c_in.append(usage.input_tokens)
                    c_out.append(usage.output_tokens)
                    c_cw.append(usage.cache_creation_input_tokens)
                    c_cr.append(usage.cache_read_input_tokens)
                else:
                    c_in.append(None)
                    c_out.append(None)
                    c_cw.append(None)
                    c_cr.append(None)
            else:
                c_model.append(None)
                c_text.append(None)
                c_stop.append(None)
                c_in.append(None)
                c_out.append(None)
                c_cw.append(None)
                c_cr.append(None)
            detail = result.error.error if result.error is not None else None
            c_etype.append((detail.type or None) if detail is not None else None)
            c_emsg.append(detail.message if detail is not None else None)
        self._pending += len(rows)
        self.lines += len(rows)
        self._tables.append(self._take_columns())
        if self._pending >= self._row_group_rows:
            self._flush(final=False)

    def _take_columns(self) -> pyarrow.Table:
        pa = self._pa
        arrays = [pa.array(values, type=self._schema.field(i).type) for i, values in enumerate(self._columns)]
        self._columns = [[] for _ in COLUMNS]
        return pa.Table.from_arrays(arrays, schema=self._schema)

    def _flush(self, *, final: bool) -> None:
        """Write whole row groups of ``row_group_rows`` rows; the rest waits (unless ``final``)."""
        if not self._pending:
            return
        size = self._row_group_rows
        table = self._pa.concat_tables(self._tables)
        whole = self._pending if final else (self._pending // size) * size
        self._writer.write_table(table.slice(0, whole), row_group_size=size)
        rest = table.slice(whole)
        self._tables = [rest] if rest.num_rows else []
        self._pending = rest.num_rows

    def close(self) -> FileInfo:
        self._flush(final=True)
        self._writer.close()
        self._sink.close()
        return FileInfo(self.name, self._sink.size, self.lines, self._sink.sha256, self.result_type)

    def discard(self) -> None:
        self._columns = [[] for _ in COLUMNS]
        self._tables = []
        self._sink.discard()
        # The footer goes nowhere (the sink is discarded); the export's own error is what matters.
        with contextlib.suppress(Exception):
            self._writer.close()

"""Reading the input table a slice at a time: Parquet row groups, CSV blocks, JSONL lines.

``table_path`` is a file, a folder (its ``.parquet``, ``.csv`` and ``.jsonl`` files, sorted by
name; names starting with ``_`` or ``.`` skipped) or a glob. Every file of one input must have
the same columns; the first file's schema is the table's. Nothing reads a file whole: a million
rows of Parquet are read a row group at a time, CSV in blocks, JSONL in batches of lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.io.shards import InputError, resolve_inputs

if TYPE_CHECKING:
    import pyarrow
    import pyarrow.parquet
    from airflow.sdk import ObjectStoragePath

TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: Rows per slice: big enough for vectorised work, small enough to keep memory flat.
SLICE_ROWS = 65_536
#: The render's Parquet slices, decoded, roughly (``max_bytes``): rows are cut from the file's own bytes
#: per row, so a table of long documents is read in fewer rows per slice than one of short reviews.
SLICE_BYTES = 4 << 20
#: Parquet pages are read through a buffer of this size, not a row group's whole column chunks at once.
READ_BUFFER = 1 << 20


class TableError(AnthropixError, ValueError):
    """The input table cannot be read (no file, an unknown format, columns that differ between files)."""


def format_of(name: str) -> str | None:
    for suffix, kind in TABLE_SUFFIXES.items():
        if name.lower().endswith(suffix):
            return kind
    return None


def table_files(path: ObjectStoragePath) -> list[ObjectStoragePath]:
    """The files behind ``table_path``, in the order their rows are read."""
    try:
        if path.is_file():
            if format_of(path.name) is None:
                raise TableError(f"table_path {path}: not a .parquet, .csv or .jsonl file")
            return [path]
        if path.is_dir():
            found = sorted(
                (p for p in path.iterdir() if p.is_file() and not p.name.startswith(("_", ".")) and format_of(p.name)),
                key=lambda p: p.name,
            )
            if not found:
                raise TableError(f"table_path {path} is a folder without .parquet, .csv or .jsonl files")
            return found
    except OSError as exc:
        raise TableError(f"table_path {path} cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        files = [f for f in resolve_inputs(path) if format_of(f.name)] if "*" in str(path) or "?" in str(path) else []
    except InputError as exc:
        raise TableError(str(exc).replace("requests_path", "table_path")) from None
    if not files:
        raise TableError(f"table_path {path} does not exist or matches no .parquet, .csv or .jsonl file")
    return files


def iter_slices(
    files: Sequence[ObjectStoragePath], rows: int = SLICE_ROWS, *, max_bytes: int | None = None
) -> Iterator[pyarrow.RecordBatch]:
    """Every row of the table in order, as record batches of at most ``rows`` rows, all with the first file's schema.

    :param max_bytes: also cut a Parquet file's slices to about this many bytes decoded, from
        the sizes in its footer (the render's slices are a few MB whatever the rows; the join's
        stay ``rows`` long, as each of them becomes a row group of the output).
    """
    schema: pyarrow.Schema | None = None
    for file in files:
        for batch in _file_slices(file, rows, schema, max_bytes):
            if schema is None:
                schema = batch.schema
            elif batch.schema != schema:
                batch = _conform(batch, schema, file)
            yield batch


def _conform(batch: pyarrow.RecordBatch, schema: pyarrow.Schema, file: ObjectStoragePath) -> pyarrow.RecordBatch:
    import pyarrow as pa

    if batch.schema.names != schema.names:
        raise TableError(f"{file}: columns {batch.schema.names} differ from the first file's {schema.names}")
    try:
        return pa.RecordBatch.from_arrays(
            [c.cast(f.type) for c, f in zip(batch.columns, schema, strict=True)], schema=schema
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TableError(f"{file}: its column types do not match the first file's ({exc})") from None


def _file_slices(
    file: ObjectStoragePath, rows: int, schema: pyarrow.Schema | None, max_bytes: int | None
) -> Iterator[pyarrow.RecordBatch]:
    import pyarrow as pa

    kind = format_of(file.name)
    try:
        with file.open("rb") as handle:
            if kind == "parquet":
                yield from _parquet_slices(handle, rows, max_bytes)
            elif kind == "csv":
                import pyarrow.csv as pacsv

                options = pacsv.ConvertOptions(column_types=schema) if schema is not None else None
                reader = pacsv.open_csv(
                    handle, read_options=pacsv.ReadOptions(block_size=16 << 20), convert_options=options
                )
                for batch in reader:
                    yield from _cut(batch, rows)
            else:
                yield from _jsonl_slices(handle, file, rows, schema)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TableError(f"{file} cannot be read as {kind} ({type(exc).__name__}: {exc})") from None


def _parquet_slices(handle: Any, rows: int, max_bytes: int | None) -> Iterator[pyarrow.RecordBatch]:
    """A Parquet file's rows a slice at a time, whatever its row groups.

    pyarrow's defaults read a whole row group's column chunks before its first row (a file
    written with the defaults is one row group of up to a million rows: hundreds of MB) and
    decode a slice on a thread per column. Here the pages are streamed through a small buffer
    and decoded on this thread; the slices are the same. Measured reading a million 300-byte
    rows (one row group, 99 MB), imports done: RSS grew by 260-310 MB with the defaults,
    135 MB like this, 73 MB with slices of ``max_bytes=SLICE_BYTES``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=READ_BUFFER)
    if max_bytes is not None:
        rows = _rows_per_slice(parquet.metadata, rows, max_bytes)
    pool = pa.default_memory_pool()
    for batch in parquet.iter_batches(batch_size=rows, use_threads=False):
        yield batch
        # Arrow's allocator keeps the pages of slices already dropped for later ones, and then some:
        # handing them back each slice took the render of a million rows from +110 to +95 MB, in no more time.
        pool.release_unused()


def _rows_per_slice(metadata: pyarrow.parquet.FileMetaData, rows: int, max_bytes: int) -> int:
    """At most ``rows``, and about ``max_bytes`` of the file's rows decoded (by its footer's sizes, if it has them)."""
    total_rows = int(metadata.num_rows)
    decoded = sum(int(metadata.row_group(i).total_byte_size) for i in range(metadata.num_row_groups))
    if total_rows <= 0 or decoded <= 0:
        return rows
    return max(1, min(rows, max_bytes * total_rows // decoded))


def _cut(batch: pyarrow.RecordBatch, rows: int) -> Iterator[pyarrow.RecordBatch]:
    for start in range(0, batch.num_rows, rows):
        yield batch.slice(start, rows)


def _jsonl_slices(
    handle: Any, file: ObjectStoragePath, rows: int, schema: pyarrow.Schema | None
) -> Iterator[pyarrow.RecordBatch]:
    import msgspec
    import pyarrow as pa

    decoder = msgspec.json.Decoder(dict[str, Any])
    pending: list[dict[str, Any]] = []
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            pending.append(decoder.decode(line))
        except msgspec.DecodeError as exc:
            raise TableError(f"{file} line {number}: not a JSON object ({exc})") from None
        if len(pending) == rows:
            batch = pa.RecordBatch.from_pylist(pending, schema=schema)
            schema = schema or batch.schema
            yield batch
            pending = []
    if pending:
        yield pa.RecordBatch.from_pylist(pending, schema=schema)

"""The output table: every input row once, in input order, with its answer's columns; published all or nothing.

The answers (one per custom_id, in no order) are one compact Arrow table; each input slice's
custom_ids are looked up in it (``pyarrow.compute.index_in``, a hash lookup in C++) and the
matching answers taken alongside the slice's own columns. Files are ``part-00000.parquet``, ...
of at most ``rows_per_file`` rows, staged and published with ``_manifest.json`` last by
:class:`~airflow_provider_anthropix.io.publish.AtomicPublisher`; a failure leaves the previous
output as it was.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_anthropix.table.ids import custom_id_for, position_id
from airflow_provider_anthropix.table.source import TableError

if TYPE_CHECKING:
    import pyarrow
    from airflow.sdk import ObjectStoragePath

#: The only data files this export writes (and so the only ones it removes from the destination).
PART_NAME = re.compile(r"part-\d{5}\.parquet")
ROWS_PER_FILE = 1_000_000


def custom_ids_of(batch: pyarrow.RecordBatch, id_column: str | None, start: int) -> pyarrow.Array:
    """The custom_ids of one input slice, as the render gave them (``start``: the slice's first row position)."""
    import pyarrow as pa

    if id_column is None:
        return pa.array([position_id(start + i) for i in range(batch.num_rows)], type=pa.string())
    return pa.array([custom_id_for(key) for key in batch.column(id_column).to_pylist()], type=pa.string())


def joined_slices(
    slices: Iterable[pyarrow.RecordBatch], answers: pyarrow.Table, id_column: str | None
) -> Iterator[pyarrow.RecordBatch]:
    """Each input slice with its answers' columns added, in input order; a row without an answer is an error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    answer_ids = answers.column("_custom_id").combine_chunks()
    lookup = pc.SetLookupOptions(value_set=answer_ids)
    start = 0
    for batch in slices:
        ids = custom_ids_of(batch, id_column, start)
        where = pc.index_in(ids, options=lookup)
        if where.null_count:
            missing = ids.filter(pc.is_null(where))
            raise TableError(
                f"{missing[0]} (row {start + pc.index(pc.is_null(where), True).as_py()}) has no answer in the job's "
                f"results ({len(missing)} row(s) in this slice lack one); nothing was published"
            )
        taken = answers.take(where).combine_chunks()
        columns = list(batch.columns) + [taken.column(i).combine_chunks() for i in range(taken.num_columns)]
        names = list(batch.schema.names) + taken.column_names
        yield pa.RecordBatch.from_arrays(columns, names=names)
        start += batch.num_rows


def publish_table(
    destination: ObjectStoragePath,
    batches: Iterable[pyarrow.RecordBatch],
    manifest: Mapping[str, Any],
    *,
    rows_per_file: int = ROWS_PER_FILE,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Write ``batches`` as Parquet files under ``destination`` and publish them with ``_manifest.json``, all or nothing."""
    import pyarrow.parquet as pq

    from airflow_provider_anthropix.io.publish import AtomicPublisher

    started = time.monotonic()
    publisher = AtomicPublisher(destination)
    publisher.prepare()
    files: list[dict[str, Any]] = []
    writer: Any = None
    sink: Any = None
    rows_in_file = 0
    schema: pyarrow.Schema | None = None
    try:

        def close() -> None:
            nonlocal writer, sink
            if writer is not None:
                writer.close()
                sink.close()
                files[-1].update(bytes=sink.size, sha256=sink.sha256)
            writer = sink = None

        for batch in batches:
            if should_stop is not None and should_stop():
                raise TableError("the export was stopped; nothing was published")
            schema = schema or batch.schema
            offset = 0
            while offset < batch.num_rows:
                if writer is None:
                    name = f"part-{len(files):05d}.parquet"
                    sink = publisher.open(name)
                    writer = pq.ParquetWriter(sink, schema, compression="zstd")
                    files.append({"name": name, "rows": 0})
                    rows_in_file = 0
                piece = batch.slice(offset, rows_per_file - rows_in_file)
                writer.write_batch(piece, row_group_size=len(piece))
                rows_in_file += piece.num_rows
                files[-1]["rows"] += piece.num_rows
                offset += piece.num_rows
                if rows_in_file >= rows_per_file:
                    close()
        close()
        names = [f["name"] for f in files]
        existing = _our_earlier_parts(destination)
        full = {
            **manifest,
            "files": files,
            "rows": sum(f["rows"] for f in files),
            "columns": schema.names if schema is not None else [],
            "export_seconds": round(time.monotonic() - started, 3),
        }
        uri = publisher.commit(names, full, remove=[n for n in existing if n not in names])
    except BaseException:
        publisher.abort()
        raise
    return {"manifest": uri, **full}


def _our_earlier_parts(destination: ObjectStoragePath) -> list[str]:
    try:
        return sorted(p.name for p in destination.iterdir() if PART_NAME.fullmatch(p.name) and p.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []

"""The output table published all or nothing: joined slices (see ``table/join.py``) written as Parquet.

Files are ``part-00000.parquet``, ... of at most ``rows_per_file`` rows, staged and published
with ``_manifest.json`` last by :class:`~airflow_provider_anthropix.io.publish.AtomicPublisher`;
a failure (an error raised by the slices themselves, a stop, a last check that fails) leaves the
previous output as it was.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_anthropix.table.source import TableError

if TYPE_CHECKING:
    import pyarrow
    from airflow.sdk import ObjectStoragePath

#: The only data files this export writes (and so the only ones it removes from the destination).
PART_NAME = re.compile(r"part-\d{5}\.parquet")
ROWS_PER_FILE = 1_000_000


def publish_table(
    destination: ObjectStoragePath,
    batches: Iterable[pyarrow.RecordBatch],
    manifest: Mapping[str, Any],
    *,
    rows_per_file: int = ROWS_PER_FILE,
    should_stop: Callable[[], bool] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Write ``batches`` as Parquet files under ``destination`` and publish them with ``_manifest.json``, all or nothing.

    :param before_commit: called once every file is written, before any is published; raising stops the publish.
    """
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
        if before_commit is not None:
            before_commit()
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

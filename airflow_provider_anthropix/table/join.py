"""Answers joined to the input rows in input order, with memory that does not grow with the answers.

Holding every answer in memory until the rows are read costs about 600 bytes a row (the answer
text, the parsed columns); a million answers were over half a gigabyte. Instead:

1. the input's custom_ids are computed once, in input order, as one compact Arrow string array
   (only the key column is read; 15-50 bytes a row);
2. each slice of answers, as it is parsed, is written as it comes to a compressed Arrow IPC
   file in a local temporary folder that lives only as long as this export (this task run,
   this host); only its custom_ids stay in memory;
3. once every answer has come, one ``pyarrow.compute.index_in`` finds all their rows
   (building its hash table of a million ids costs far more than the lookups, so it is built
   once, not once a slice), and the answers are read back and appended, sorted by position, to
   position buckets (more IPC files);
4. the input is read again a slice at a time; each slice takes its bucket(s), sorted by
   position, and its answers' columns are laid beside its own.

Every answer must name a row and every row must have exactly one answer: an answer for no row
is refused when the rows are looked up, bucket sizes are compared with the rows they cover
before anything is written, and a bucket's positions are checked to be exactly its rows when it
is loaded. The
second read of the input must give the same custom_ids as the first (a table changed in between
is refused). The temporary folder is removed on every way out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_anthropix.api.limits import CUSTOM_ID_RE
from airflow_provider_anthropix.table.ids import ROW_ID_PREFIX, custom_id_for
from airflow_provider_anthropix.table.source import SLICE_ROWS, TableError, format_of, iter_slices

if TYPE_CHECKING:
    import pyarrow
    from airflow.sdk import ObjectStoragePath

#: Rows per position bucket: a loaded bucket is this many answers (tens of MB), never all of them.
BUCKET_ROWS = 16_384
#: At most this many buckets (open files) however long the table: larger buckets for larger tables.
MAX_BUCKETS = 256
#: The column holding an answer's row position while it is spilled (never published).
POSITION = "_position"
_STRING_TYPES = ("string", "large_string")


def custom_ids_of(batch: pyarrow.RecordBatch, id_column: str | None, start: int) -> pyarrow.Array:
    """The custom_ids of one input slice, exactly as the render gave them (``start``: the slice's first row position).

    Keys that are valid custom_id strings (the usual case) are taken as they are, checked in C++;
    only the others (and keys that are not strings) go through :func:`custom_id_for` one by one.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if id_column is None:
        positions = pa.array(range(start, start + batch.num_rows), type=pa.int64()).cast(pa.string())
        return pc.binary_join_element_wise(ROW_ID_PREFIX, positions, "")
    keys = batch.column(id_column)
    if str(keys.type) in _STRING_TYPES and keys.null_count == 0:
        keys = keys.cast(pa.string())
        valid = pc.match_substring_regex(keys, CUSTOM_ID_RE.pattern)  # anchored; RE2's $ is the end
        if pc.all(valid).as_py() is not False:
            return keys
        odd = pc.invert(valid)
        derived = pa.array([custom_id_for(key) for key in keys.filter(odd).to_pylist()], type=pa.string())
        return pc.replace_with_mask(keys, odd, derived)  # the derived ids go where their keys were, in order
    return pa.array([custom_id_for(key) for key in keys.to_pylist()], type=pa.string())


def input_custom_ids(slices: Iterable[pyarrow.RecordBatch], id_column: str | None) -> pyarrow.Array:
    """Every row's custom_id, in input order, as one Arrow array (``slices`` need hold only the key column)."""
    import pyarrow as pa

    parts: list[pyarrow.Array] = []
    start = 0
    for batch in slices:
        parts.append(custom_ids_of(batch, id_column, start))
        start += batch.num_rows
    return pa.concat_arrays(parts) if parts else pa.array([], type=pa.string())


def key_slices(files: Sequence[ObjectStoragePath], id_column: str | None) -> Iterator[pyarrow.RecordBatch]:
    """The table's rows in order with only the key column (none for positions): Parquet reads nothing else.

    Keys keep the first file's type, as :func:`~airflow_provider_anthropix.table.source.iter_slices`
    gives them (a key's type is part of its derived custom_id). CSV and JSONL are read whole.
    """
    import pyarrow as pa

    if not all(format_of(f.name) == "parquet" for f in files):
        for batch in iter_slices(files):
            yield batch.select([id_column] if id_column is not None else [])
        return
    import pyarrow.parquet as pq

    kind: pyarrow.DataType | None = None
    for file in files:
        try:
            with file.open("rb") as handle:
                parquet = pq.ParquetFile(handle)
                if id_column is not None and id_column not in parquet.schema_arrow.names:
                    raise TableError(f"{file}: no column {id_column!r}")
                columns = [id_column] if id_column is not None else []
                for batch in parquet.iter_batches(batch_size=SLICE_ROWS, columns=columns):
                    if id_column is not None:
                        kind = kind or batch.schema.field(id_column).type
                        if batch.schema.field(id_column).type != kind:
                            batch = pa.RecordBatch.from_arrays([batch.column(0).cast(kind)], names=[id_column])
                    yield batch
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise TableError(f"{file} cannot be read as parquet ({type(exc).__name__}: {exc})") from None


def bucket_rows_for(rows: int, bucket_rows: int = BUCKET_ROWS) -> int:
    """The bucket size for a table of ``rows`` rows: ``bucket_rows``, or larger so that at most MAX_BUCKETS are made."""
    return max(1, bucket_rows, -(-rows // MAX_BUCKETS))


class AnswerSpill:
    """Answers (in any order) spilled by row position to local Arrow IPC files, read back a bucket at a time.

    :param row_ids: every row's custom_id, in input order.
    :param schema: the answers' schema (with ``_custom_id``).
    :param folder: a local folder of this task run (removed by the caller).
    :param bucket_rows: rows per bucket.
    """

    def __init__(self, row_ids: pyarrow.Array, schema: pyarrow.Schema, folder: str, *, bucket_rows: int) -> None:
        import pyarrow as pa

        self.row_ids = row_ids
        self.rows = len(row_ids)
        self.bucket_rows = bucket_rows
        self.buckets = -(-self.rows // bucket_rows)
        self.folder = folder
        self.schema = schema.append(pa.field(POSITION, pa.int64()))
        self.counts = [0] * self.buckets
        self.answers = 0
        self._answer_schema = schema
        self._writers: dict[int, Any] = {}
        self._options = pa.ipc.IpcWriteOptions(compression="lz4")
        self._arrivals: Any = None
        self._arrival_ids: list[pyarrow.Array] = []

    def __enter__(self) -> AnswerSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        """Close whatever file is still open (after a failure), before the folder is removed."""
        open_files = [self._arrivals, *self._writers.values()]
        self._arrivals, self._writers = None, {}
        for writer in open_files:
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()

    def _path(self, bucket: int) -> str:
        return os.path.join(self.folder, f"bucket-{bucket:05d}.arrows")

    def _arrivals_path(self) -> str:
        return os.path.join(self.folder, "arrivals.arrows")

    def add(self, batch: pyarrow.RecordBatch) -> None:
        """Spill one slice of answers as it comes (their rows are found once all have come: one lookup, not one a slice)."""
        import pyarrow as pa

        if not batch.num_rows:
            return
        if self._arrivals is None:
            self._arrivals = pa.ipc.new_stream(self._arrivals_path(), self._answer_schema, options=self._options)
        self._arrivals.write_batch(batch)
        self._arrival_ids.append(batch.column("_custom_id"))
        self.answers += batch.num_rows

    def close(self) -> None:
        """Find every answer's row and move it to its position bucket; refuse an answer for no row."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._arrivals is None:
            return
        self._arrivals.close()
        self._arrivals = None
        ids = pa.chunked_array(self._arrival_ids, pa.string())
        self._arrival_ids = []
        # One hash table of the rows' ids for every answer: building it costs far more than a lookup.
        where = pc.index_in(ids, value_set=self.row_ids)
        if where.null_count:
            strays = ids.filter(pc.is_null(where))
            raise TableError(
                f"the job's results hold an answer for {strays[0]}, which no row of the table has "
                f"({len(strays):,} such answer(s)); nothing was published"
            )
        positions = where.cast(pa.int64()).combine_chunks()
        del ids, where
        done = pending_rows = 0
        pending: list[pyarrow.RecordBatch] = []
        with pa.OSFile(self._arrivals_path(), "rb") as source:
            for batch in pa.ipc.open_stream(source):
                pending.append(batch)
                pending_rows += batch.num_rows
                if pending_rows >= self.bucket_rows:
                    done = self._distribute(pending, positions, done)
                    pending, pending_rows = [], 0
            done = self._distribute(pending, positions, done)
        os.unlink(self._arrivals_path())
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()

    def _distribute(self, batches: list[pyarrow.RecordBatch], positions: pyarrow.Array, done: int) -> int:
        """Append ``batches`` (answers ``done`` onwards, in arrival order) to their buckets, each part sorted by position."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if not batches:
            return done
        table = pa.Table.from_batches(batches, schema=self._answer_schema)
        where = positions.slice(done, table.num_rows)
        order = pc.sort_indices(where)
        ordered = table.append_column(POSITION, where).take(order).combine_chunks()
        sorted_positions = ordered.column(POSITION).to_numpy()
        buckets = sorted_positions // self.bucket_rows
        firsts = np.flatnonzero(np.diff(buckets, prepend=-1))
        for i, first in enumerate(firsts):
            end = int(firsts[i + 1]) if i + 1 < len(firsts) else len(buckets)
            bucket = int(buckets[first])
            for part in ordered.slice(int(first), end - int(first)).to_batches():
                self._writer(bucket).write_batch(part)
            self.counts[bucket] += end - int(first)
        return done + int(table.num_rows)

    def _writer(self, bucket: int) -> Any:
        import pyarrow as pa

        writer = self._writers.get(bucket)
        if writer is None:
            writer = self._writers[bucket] = pa.ipc.new_stream(self._path(bucket), self.schema, options=self._options)
        return writer

    def bucket_range(self, bucket: int) -> tuple[int, int]:
        start = bucket * self.bucket_rows
        return start, min(start + self.bucket_rows, self.rows)

    def check_counts(self) -> None:
        """Before anything is written: every bucket holds as many answers as it has rows (else say which row or answer)."""
        for bucket, count in enumerate(self.counts):
            start, end = self.bucket_range(bucket)
            if count != end - start:
                self.load(bucket)  # names the first row without an answer or the first answer twice
                raise TableError(f"rows {start:,} to {end - 1:,} have {count:,} answers; nothing was published")

    def load(self, bucket: int) -> pyarrow.Table:
        """One bucket's answers sorted by position, checked to be exactly one per row of its range."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        start, end = self.bucket_range(bucket)
        if self.counts[bucket]:
            with pa.OSFile(self._path(bucket), "rb") as source:
                table = pa.ipc.open_stream(source).read_all()
            table = table.take(pc.sort_indices(table.column(POSITION)))
        else:
            table = self.schema.empty_table()
        positions = table.column(POSITION).to_numpy()
        expected = np.arange(start, end, dtype=np.int64)
        if len(positions) == len(expected) and np.array_equal(positions, expected):
            return table
        twice = np.flatnonzero(positions[1:] == positions[:-1])
        if len(twice):
            custom_id = table.column("_custom_id")[int(twice[0])]
            raise TableError(
                f"{custom_id} (row {int(positions[twice[0]]):,}) has more than one answer in the job's results; "
                "nothing was published"
            )
        gaps = np.flatnonzero(positions != expected[: len(positions)])
        missing = int(expected[gaps[0]]) if len(gaps) else int(expected[len(positions)])
        raise TableError(
            f"{self.row_ids[missing]} (row {missing:,}) has no answer in the job's results "
            f"({(end - start) - len(positions):,} row(s) from {start:,} to {end - 1:,} lack one); nothing was published"
        )

    def joined(self, slices: Iterable[pyarrow.RecordBatch], id_column: str | None) -> Iterator[pyarrow.RecordBatch]:
        """Each input slice with its answers' columns added, in input order, in parts of at most a bucket's rows.

        A part's answers are copied once into the output batch; parts as large as a bucket keep
        that copy, and the Parquet row group made of it, a few megabytes.
        """
        import pyarrow as pa

        window: pyarrow.Table | None = None
        window_start = window_end = 0
        next_bucket = 0
        start = 0
        for batch in _parts(slices, self.bucket_rows):
            end = start + batch.num_rows
            if end > self.rows:
                raise TableError(f"the table has more rows than the job's {self.rows:,} answers; nothing was published")
            ids = custom_ids_of(batch, id_column, start)
            if not ids.equals(self.row_ids.slice(start, batch.num_rows)):
                raise TableError(
                    f"the table's rows {start:,} to {end - 1:,} are not the rows read a moment ago (the input changed "
                    "while it was joined); nothing was published"
                )
            parts = [] if window is None else [window.slice(start - window_start)]
            while window_end < end:
                parts.append(self.load(next_bucket))
                next_bucket += 1
                window_end = self.bucket_range(next_bucket - 1)[1]
            window, window_start = pa.concat_tables(parts) if len(parts) != 1 else parts[0], start
            answers = window.slice(0, batch.num_rows).drop_columns([POSITION]).combine_chunks()
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, *(column.combine_chunks() for column in answers.columns)],
                names=[*batch.schema.names, *answers.column_names],
            )
            start = end
        if start != self.rows:
            raise TableError(f"the table has {start:,} rows but the job answered {self.rows:,}; nothing was published")


def _parts(slices: Iterable[pyarrow.RecordBatch], rows: int) -> Iterator[pyarrow.RecordBatch]:
    for batch in slices:
        for offset in range(0, batch.num_rows, rows):
            yield batch.slice(offset, rows)


def stop_check(should_stop: Callable[[], bool] | None) -> Callable[[], None]:
    """A function that raises when the task is being stopped (polled between slices of answers)."""

    def check() -> None:
        if should_stop is not None and should_stop():
            raise TableError("the export was stopped; nothing was published")

    return check

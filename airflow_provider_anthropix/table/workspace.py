"""The batch job's files with a table's export: the job engine as it is, the answers joined back into rows.

:class:`TableWorkspace` is the job's :class:`~airflow_provider_anthropix.io.job_files.JobWorkspace`
with two differences: at a round's end it also finds succeeded answers that break the schema
(when ``retry_invalid_output``, in the same pass that scans and keeps the batch's results), and
its export reads every batch's results (the same checked streams the merged export reads) into
answer columns, joins them to the input rows and publishes a Parquet dataset instead of results
lines. The join spills the answers to a local temporary folder of this task run rather than
holding them all (``table/join.py``): its memory does not grow with the answers.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_anthropix.io.job_files import JobWorkspace
from airflow_provider_anthropix.table.answers import (
    INVALID_OUTPUT,
    AnswerLayout,
    AnswerReader,
    InvalidOutputs,
    answer_schema,
)
from airflow_provider_anthropix.table.join import (
    BUCKET_ROWS,
    AnswerSpill,
    bucket_rows_for,
    input_custom_ids,
    key_slices,
    stop_check,
)
from airflow_provider_anthropix.table.output import publish_table
from airflow_provider_anthropix.table.source import SLICE_BYTES, TableError, iter_slices, table_files

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_anthropix.api.models import RequestCounts
    from airflow_provider_anthropix.cost.pricing import PriceTable
    from airflow_provider_anthropix.io.shards import RetryScan


class TableWorkspace(JobWorkspace):
    """A job's workspace whose export is a table (see the module docstring).

    :param table_path: the input table (its files are read again, in order, for the join).
    :param id_column: the rows' key column, or None for positions.
    :param layout: the answer's columns.
    :param retry_invalid_output: send answers that break the schema again in the job's retry rounds.
    :param table_manifest: facts for the manifest (input, columns, schema...).
    :param bucket_rows: rows per position bucket of the join's spill (smaller in tests, to make several).
    :param spill_parent: where the join's local temporary folder is made (default: the system's temp folder).
    """

    def __init__(
        self,
        root: ObjectStoragePath,
        *,
        table_path: ObjectStoragePath,
        id_column: str | None,
        layout: AnswerLayout,
        retry_invalid_output: bool,
        price_table: PriceTable | None,
        redact: Callable[[str], str],
        table_manifest: Mapping[str, Any],
        bucket_rows: int = BUCKET_ROWS,
        spill_parent: str | None = None,
        **job_workspace: Any,
    ) -> None:
        super().__init__(root, **job_workspace)
        self.table_path = table_path
        self.id_column = id_column
        self.layout = layout
        self.retry_invalid_output = retry_invalid_output
        self.price_table = price_table
        self.redact = redact
        self.table_manifest = dict(table_manifest)
        self.bucket_rows = bucket_rows
        self.spill_parent = spill_parent

    def scan_for_retries(
        self, batch_id: str, chunks: Iterable[bytes], *, retry_error_types: Collection[str], retry_expired: bool
    ) -> RetryScan:
        """The job's scan, plus the answers that break the schema, found in the same pass over the results."""
        if not self.retry_invalid_output or self.layout.schema is None:
            return super().scan_for_retries(
                batch_id, chunks, retry_error_types=retry_error_types, retry_expired=retry_expired
            )
        invalid = InvalidOutputs(self.layout.schema)
        scan = super().scan_for_retries(
            batch_id, invalid.watch(chunks), retry_error_types=retry_error_types, retry_expired=retry_expired
        )
        for custom_id in sorted(invalid.found):
            scan.add(custom_id, "succeeded")  # a succeeded line, sent again like an errored one
        return scan

    def _check_input_unchanged(self, files: list[ObjectStoragePath]) -> None:
        """The table read for the join must be the one the requests were rendered from (size and version)."""
        from airflow_provider_anthropix.io.shards import fingerprint_inputs

        rendered_from = self.table_manifest.get("input_fingerprint")
        if rendered_from is not None and fingerprint_inputs(files) != rendered_from:
            raise TableError(
                f"table_path {self.table_path} changed since its rows were sent (other files, sizes or versions): "
                "the answers cannot be joined to rows they were not asked for; nothing was published. "
                "Restore the input, or clear the task to render and send the new rows."
            )

    def _export_once(
        self,
        streams: Iterable[tuple[Iterable[bytes], Collection[str]]],
        sources: list[Any],
        expected: RequestCounts,
        manifest_extra: dict[str, Any],
    ) -> dict[str, Any]:
        files = table_files(self.table_path)
        self._check_input_unchanged(files)
        started = time.monotonic()
        row_ids = input_custom_ids(key_slices(files, self.id_column), self.id_column)
        if len(row_ids) != expected.total:
            raise TableError(
                f"the table has {len(row_ids):,} rows but the job answered {expected.total:,}; nothing was published"
            )
        self.log.info("Read the custom_ids of %s rows (%.1f s)", f"{len(row_ids):,}", time.monotonic() - started)
        stop = stop_check(self.should_stop)
        with (
            tempfile.TemporaryDirectory(
                prefix="anthropix-join-", dir=self.spill_parent, ignore_cleanup_errors=True
            ) as folder,
            AnswerSpill(
                row_ids, answer_schema(self.layout), folder, bucket_rows=bucket_rows_for(len(row_ids), self.bucket_rows)
            ) as spill,
        ):
            reader = AnswerReader(
                self.layout, price_table=self.price_table, redact=self.redact, sink=_stopping(spill.add, stop)
            )
            for source, (chunks, drop) in zip(sources, streams, strict=True):
                reader.read(chunks, batch_id=source.batch_id, drop=drop)
                self.log.info(
                    "Read the answers of batch %s: %s answers so far (%.1f s)",
                    source.batch_id,
                    f"{reader.rows:,}",
                    time.monotonic() - started,
                )
            reader.finish()
            spill.close()
            self.log.info(
                "Spilled %s answers by row position (%.1f s)", f"{spill.answers:,}", time.monotonic() - started
            )
            if spill.answers != expected.total:
                raise TableError(
                    f"the job's results hold {spill.answers:,} answers for {expected.total:,} requests; "
                    "nothing was published"
                )
            spill.check_counts()
            totals = reader.totals
            counts = {
                kind: totals.counts.get(kind, 0)
                for kind in ("succeeded", INVALID_OUTPUT, "errored", "expired", "canceled")
            }
            manifest = {
                **self.table_manifest,
                **manifest_extra,
                "kind": "anthropix-table",
                "counts": counts,
                "tokens": {"input": totals.input_tokens, "output": totals.output_tokens},
                "cost_usd": round(totals.cost_usd, 6),
                "unpriced_models": sorted(totals.unpriced_models),
            }
            self._check_input_unchanged(files)
            published = publish_table(
                self.destination,
                spill.joined(iter_slices(files, max_bytes=SLICE_BYTES), self.id_column),
                manifest,
                should_stop=self.should_stop,
                before_commit=lambda: self._check_input_unchanged(files),
            )
        self.log.info(
            "Table of %s rows published at %s: %s",
            f"{published['rows']:,}",
            self.destination,
            ", ".join(f"{k} {v:,}" for k, v in counts.items() if v),
        )
        return {
            "destination": str(self.destination),
            "manifest": published["manifest"],
            "files": [f["name"] for f in published["files"]],
            "rows": published["rows"],
            "counts": counts,
            "tokens": manifest["tokens"],
            "cost_usd": manifest["cost_usd"],
        }


def _stopping(add: Callable[[Any], None], stop: Callable[[], None]) -> Callable[[Any], None]:
    """``add``, after checking the task is not being stopped (between slices of answers)."""

    def checked(batch: Any) -> None:
        stop()
        add(batch)

    return checked

"""Stream results JSONL from an iterable of byte chunks into published objects plus a manifest.

This is the whole export, without HTTP and without Airflow's task machinery: the operator
passes the hook's byte stream, a benchmark or a test passes whatever it likes. Memory
holds one network chunk, one partial line, the writers' buffers (a few MB; one Parquet
row group) and the set of custom_ids, however large the batch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pendulum
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.lines import BlockSplitter
from airflow_provider_anthropix.api.models import RESULT_TYPES, RequestCounts
from airflow_provider_anthropix.cost.pricing import PriceTable, usage_cost, validate_price_table
from airflow_provider_anthropix.io.by_outcome import split_by_result_type
from airflow_provider_anthropix.io.checks import ResultsMismatchError, completeness_problems, validate_on_mismatch
from airflow_provider_anthropix.io.jsonl import DEFAULT_GZIP_LEVEL, FileInfo, JsonlWriter
from airflow_provider_anthropix.io.manifest import build_manifest, xcom_summary
from airflow_provider_anthropix.io.parquet import DEFAULT_PARQUET_CODEC, DEFAULT_ROW_GROUP_ROWS, PARQUET_CODECS
from airflow_provider_anthropix.io.pipeline import OrderedWorker, Prefetcher
from airflow_provider_anthropix.io.progress import Progress
from airflow_provider_anthropix.io.publish import AtomicPublisher
from airflow_provider_anthropix.io.summary import Summariser

FORMATS = ("jsonl", "parquet")
JSONL_COMPRESSIONS = (None, "gzip")
_SAFE_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: The object for results of a type this version does not know, whose name is not a safe stem.
OTHER_STEM = "other"
#: Every stem a file of an export can have, except an unknown result type's own name.
OUTPUT_STEMS = ("results", *RESULT_TYPES, OTHER_STEM)

log = logging.getLogger(__name__)


class ExportInterrupted(AnthropixError):
    """The export was asked to stop (the task was killed); nothing was published."""

    retryable = True


class _Writer(Protocol):
    name: str
    lines: int

    def write(self, block: bytes | memoryview, lines: int) -> None: ...
    def close(self) -> FileInfo: ...
    def discard(self) -> None: ...


@dataclass(frozen=True)
class ExportOptions:
    """How to store the results.

    :param output_format: ``jsonl`` (default) or ``parquet`` (needs the ``parquet`` extra).
    :param compression: for ``jsonl``: ``None`` or ``"gzip"``; for ``parquet``: its codec
        (``zstd`` by default, or ``snappy``, ``gzip``, ``lz4``, ``brotli``, ``none``).
    :param split_by_result_type: one object per outcome (``succeeded.jsonl``, ``errored.jsonl``,
        ``canceled.jsonl``, ``expired.jsonl``) instead of one ``results.*``.
    :param price_table: USD per million tokens at standard price per model prefix (see
        :mod:`airflow_provider_anthropix.cost.pricing`); ``None`` uses the default table.
    :param on_mismatch: ``fail`` (default): nothing is published when the results do not
        match the batch's request_counts or repeat a custom_id; ``warn``: publish, log, and
        mark the manifest ``"complete": false``.
    """

    output_format: str = "jsonl"
    compression: str | None = None
    split_by_result_type: bool = False
    price_table: PriceTable | None = None
    on_mismatch: str = "fail"
    progress_interval: float = 5.0
    gzip_level: int = DEFAULT_GZIP_LEVEL
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
    #: Read, summarise and store in three threads (see :mod:`.pipeline`); False runs them in turn.
    pipeline: bool = True

    def __post_init__(self) -> None:
        if self.output_format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {self.output_format!r}")
        if self.output_format == "jsonl" and self.compression not in JSONL_COMPRESSIONS:
            raise ValueError(f"compression for jsonl must be None or 'gzip'; got {self.compression!r}")
        if self.output_format == "parquet" and self.compression is not None and self.compression not in PARQUET_CODECS:
            raise ValueError(
                f"compression for parquet is its codec, one of {', '.join(PARQUET_CODECS)}; got {self.compression!r}"
            )
        validate_on_mismatch(self.on_mismatch)
        if self.price_table is not None:
            object.__setattr__(self, "price_table", validate_price_table(self.price_table))

    @property
    def codec(self) -> str | None:
        """The compression actually applied: ``gzip``, a Parquet codec (``zstd`` by default), or None."""
        if self.output_format == "parquet":
            codec = self.compression or DEFAULT_PARQUET_CODEC
            return None if codec == "none" else codec
        return self.compression

    def file_name(self, stem: str) -> str:
        if self.output_format == "parquet":
            return f"{stem}.parquet"
        return f"{stem}.jsonl.gz" if self.compression == "gzip" else f"{stem}.jsonl"


def all_output_names() -> frozenset[str]:
    """Every object name an export writes with some options (``results.jsonl``, ``errored.parquet``, ...).

    This is the export's deletion rule: an export removes earlier objects only from this
    set (those it does not write now), never a name read from a manifest it finds. Results of
    an unknown type whose name is a safe stem are written as ``<type>.*``; those are not in
    the set, so a later export leaves them in place rather than guess.
    """
    names = set()
    for stem in OUTPUT_STEMS:
        for output_format in FORMATS:
            compressions = JSONL_COMPRESSIONS if output_format == "jsonl" else (None,)
            for compression in compressions:
                names.add(ExportOptions(output_format=output_format, compression=compression).file_name(stem))
    return frozenset(names)


@dataclass
class ExportResult:
    manifest: dict[str, Any]
    manifest_uri: str
    files: list[FileInfo] = field(default_factory=list)

    def xcom(self) -> dict[str, Any]:
        return xcom_summary(self.manifest, self.manifest_uri)


class _InlineWorker:
    """Runs writes at once, in the caller's thread (``pipeline=False``)."""

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        function(*args)

    def finish(self) -> None:
        return None

    def cancel(self) -> None:
        return None


class _Outputs:
    """The open writers of one export, one per object."""

    def __init__(self, publisher: AtomicPublisher, options: ExportOptions) -> None:
        self.publisher = publisher
        self.options = options
        self.writers: dict[str | None, _Writer] = {}
        if options.split_by_result_type:
            for kind in RESULT_TYPES:
                self._open(kind, kind)
        else:
            self._open(None, "results")

    def _open(self, result_type: str | None, stem: str) -> _Writer:
        name = self.options.file_name(stem)
        sink = self.publisher.open(name)
        writer: _Writer
        if self.options.output_format == "parquet":
            from airflow_provider_anthropix.io.parquet import ParquetWriter

            writer = ParquetWriter(
                name,
                sink,
                codec=self.options.compression or DEFAULT_PARQUET_CODEC,
                row_group_rows=self.options.row_group_rows,
                result_type=result_type,
            )
        else:
            writer = JsonlWriter(
                name,
                sink,
                gzip=self.options.compression == "gzip",
                gzip_level=self.options.gzip_level,
                result_type=result_type,
            )
        self.writers[result_type] = writer
        return writer

    def for_type(self, result_type: str) -> _Writer:
        writer = self.writers.get(result_type)
        if writer is None:
            # A result type this version does not know: keep it, in its own object.
            stem = result_type if _SAFE_TYPE.match(result_type) else OTHER_STEM
            writer = self.writers.get(stem) or self._open(stem, stem)
            self.writers[result_type] = writer
        return writer

    def close(self) -> list[FileInfo]:
        seen: set[int] = set()
        infos: list[FileInfo] = []
        for writer in self.writers.values():
            if id(writer) not in seen:
                seen.add(id(writer))
                infos.append(writer.close())
        return infos

    def discard(self) -> None:
        for writer in self.writers.values():
            writer.discard()


def export_results(
    chunks: Iterable[bytes],
    destination: ObjectStoragePath,
    *,
    batch_id: str,
    expected: RequestCounts | None,
    options: ExportOptions | None = None,
    should_stop: Callable[[], bool] | None = None,
    logger: logging.Logger | None = None,
    publisher: AtomicPublisher | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Write the results stream ``chunks`` under ``destination`` and publish it with its manifest.

    The destination is checked (and the staging folder created) before the first chunk
    is pulled, so a bad destination fails before anything is downloaded. On any error,
    or when ``should_stop()`` turns true, staged objects are removed and the error raised:
    nothing is published. With ``expected`` (the batch's request_counts) the counts are
    checked; see :class:`ExportOptions` for ``on_mismatch``. ``manifest_extra`` adds
    top-level entries to the manifest (a batch job's list of batches and rounds).
    """
    options = options or ExportOptions()
    logger = logger or log
    publisher = publisher or AtomicPublisher(destination)
    started_at = pendulum.now("UTC")
    publisher.prepare({"batch_id": batch_id, "started_at": started_at.to_iso8601_string()})
    logger.info("Exporting results of %s to %s (staging in %s)", batch_id, publisher.uri, publisher.staging_uri)
    summary = Summariser()
    progress = Progress(
        expected_lines=expected.total if expected else None, interval=options.progress_interval, logger=logger
    )
    outputs: _Outputs | None = None
    source: Prefetcher[bytes] | None = Prefetcher(chunks) if options.pipeline else None
    writes: OrderedWorker | _InlineWorker | None = None
    try:
        outputs = _Outputs(publisher, options)
        writes = OrderedWorker() if options.pipeline else _InlineWorker()
        splitter = BlockSplitter()
        downloaded = 0
        split = options.split_by_result_type
        single = None if split else outputs.writers[None]

        def handle(block: bytes | memoryview) -> int:
            decoded = summary.feed_block(block)
            if single is not None:
                writes.submit(single.write, block, len(decoded))  # type: ignore[union-attr]
            else:
                for kind, (data, count) in split_by_result_type(block, decoded).items():
                    writes.submit(outputs.for_type(kind).write, data, count)  # type: ignore[union-attr]
            return len(decoded)

        for chunk in source if source is not None else chunks:
            if should_stop is not None and should_stop():
                raise ExportInterrupted(f"export of {batch_id} stopped before the end; nothing was published")
            downloaded += len(chunk)
            lines = 0
            for piece in splitter.feed(chunk):
                lines += handle(piece)
            progress.update(lines, len(chunk))
        tail = splitter.finish()
        if tail:
            progress.update(handle(tail), 0)
        writes.finish()
        files = outputs.close()
        problems = completeness_problems(summary, expected)
        if problems:
            if options.on_mismatch == "fail":
                raise ResultsMismatchError(problems)
            logger.warning("Publishing results that do not match the batch: %s", "; ".join(problems))
        cost = usage_cost(summary.tokens_by_model, options.price_table)
        if cost.unpriced_models:
            logger.warning(
                "No price for model(s) %s: the estimated cost leaves them out (pass price_table= to add them)",
                ", ".join(cost.unpriced_models),
            )
        manifest = build_manifest(
            batch_id=batch_id,
            destination=publisher.uri,
            output_format=options.output_format,
            compression=options.codec,
            split_by_result_type=split,
            files=files,
            summary=summary,
            expected=expected,
            cost=cost,
            problems=problems,
            started_at=started_at,
            ended_at=pendulum.now("UTC"),
            bytes_downloaded=downloaded,
            estimate=(manifest_extra or {}).get("estimate"),
            price_table=options.price_table,
        )
        if manifest_extra:
            manifest.update(manifest_extra)
        manifest_uri = publisher.commit([info.name for info in files], manifest, remove=all_output_names())
    except BaseException:
        if source is not None:
            source.close()
        if writes is not None:
            writes.cancel()
        if outputs is not None:
            outputs.discard()
        publisher.abort()
        raise
    progress.done()
    logger.info(
        "Published %d object(s) and %s: %s",
        len(files),
        manifest_uri,
        ", ".join(f"{n:,} {kind}" for kind, n in summary.counts.items()),
    )
    return ExportResult(manifest=manifest, manifest_uri=manifest_uri, files=files)

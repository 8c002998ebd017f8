"""What each ``anthropix batches`` action does, on a client from :mod:`.credentials`.

Each returns the exit status; errors are raised and turned into a status and one clear
line by :func:`airflow_provider_anthropix.cli.main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TextIO

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.models import BatchPage, DeletedMessageBatch, MessageBatch
from airflow_provider_anthropix.cli import render
from airflow_provider_anthropix.cli.progress import Bar, counted

DEFAULT_LIMIT = 20
#: The export's log lines repeat what the bar and the summary say; only warnings get through.
_QUIET = logging.getLogger("airflow_provider_anthropix.cli.export")
_QUIET.setLevel(logging.WARNING)
#: Bytes asked of the network per read, as the fetch operator does.
RESULTS_CHUNK_BYTES = 1 << 20


class BatchClient(Protocol):
    """What the commands use; both :class:`SyncClient` and :class:`AnthropixHook` have it."""

    def get_batch(self, batch_id: str) -> MessageBatch: ...
    def list_batches(self, limit: int = 20, before_id: str | None = None, after_id: str | None = None) -> BatchPage: ...
    def iter_batches(self, page_size: int = 100) -> Iterator[MessageBatch]: ...
    def cancel_batch(self, batch_id: str) -> MessageBatch: ...
    def delete_batch(self, batch_id: str) -> DeletedMessageBatch: ...
    def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = 1 << 16) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class UsageError(AnthropixError):
    """Flags that cannot go together (exit status 2)."""


class NotEndedError(AnthropixError):
    """The batch is still processing, so it has no results yet (exit status 7)."""


class WaitTimeout(AnthropixError):
    """``wait --timeout`` ran out before the batch ended (exit status 9)."""


class ExportFailed(AnthropixError):
    """The results export refused its destination or the stream (exit status 8)."""


class ArchiveIncomplete(AnthropixError):
    """``archive``: some batches could not be archived; the exit status is that of ``first``, the first failure."""

    def __init__(self, message: str, first: BaseException) -> None:
        super().__init__(message)
        self.first = first


def _emit_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def batches_list(client: BatchClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.all and args.limit is not None:
        raise UsageError("--all lists every batch; leave out --limit, or drop --all")
    found: list[MessageBatch] = []
    if args.all:
        found = list(client.iter_batches(page_size=100))
    else:
        limit = args.limit or DEFAULT_LIMIT
        after_id: str | None = None
        while len(found) < limit:
            page = client.list_batches(limit=min(limit - len(found), 1000), after_id=after_id)
            found.extend(page.data)
            if not page.has_more or not page.last_id:
                break
            after_id = page.last_id
    if args.json:
        _emit_json([b.to_dict() for b in found], out)
        return 0
    if not found:
        out.write("no batches\n")
        return 0
    out.write(render.batch_table(found, out) + "\n")
    total = sum(b.request_counts.total for b in found)
    running = sum(1 for b in found if not b.is_ended)
    out.write(f"\n{len(found):,} batches, {running:,} not ended, {total:,} requests\n")
    return 0


def batches_show(client: BatchClient, args: argparse.Namespace, out: TextIO) -> int:
    batch = client.get_batch(args.batch_id)
    if args.json:
        _emit_json(batch.to_dict(), out)
    else:
        out.write(render.batch_details(batch, out) + "\n")
    return 0


def wait_until_ended(
    client: BatchClient, batch: MessageBatch, interval: float, timeout: float | None, err: TextIO
) -> MessageBatch:
    """Poll until the batch ends, drawing its progress on ``err``; raises :class:`WaitTimeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with Bar(batch.id, batch.request_counts.total, "requests", stream=err) as bar:
        while True:
            counts = batch.request_counts
            bar.update(counts.done, total=counts.total, status=batch.processing_status)
            if batch.is_ended:
                return batch
            if deadline is not None and time.monotonic() + interval > deadline:
                raise WaitTimeout(
                    f"batch {batch.id} is still {batch.processing_status} ({counts.done:,}/{counts.total:,} "
                    f"requests done) after {timeout:g} s"
                )
            time.sleep(interval)
            batch = client.get_batch(batch.id)


def _finished(batch: MessageBatch, args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        _emit_json(batch.to_dict(), out)
    else:
        counts = batch.request_counts
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in counts.to_dict().items() if n) or "no requests"
        out.write(f"{batch.id} {batch.processing_status}: {kinds}\n")
    return 0


def batches_wait(client: BatchClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    batch = wait_until_ended(client, client.get_batch(args.batch_id), args.interval, args.timeout, err)
    return _finished(batch, args, out)


def batches_cancel(client: BatchClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    batch = client.cancel_batch(args.batch_id)
    if args.wait:
        batch = wait_until_ended(client, batch, args.interval, None, err)
    return _finished(batch, args, out)


def batches_delete(client: BatchClient, args: argparse.Namespace, out: TextIO) -> int:
    deleted = client.delete_batch(args.batch_id)
    if args.json:
        _emit_json({"id": deleted.id, "type": deleted.type}, out)
    else:
        out.write(f"deleted {deleted.id}\n")
    return 0


def _ended(client: BatchClient, batch_id: str) -> MessageBatch:
    batch = client.get_batch(batch_id)
    if not batch.is_ended:
        counts = batch.request_counts
        raise NotEndedError(
            f"batch {batch.id} has not ended ({batch.processing_status}, {counts.done:,}/{counts.total:,} "
            f"requests done): run `anthropix batches wait {batch.id}` first"
        )
    if batch.is_archived:
        raise NotEndedError(f"the results of batch {batch.id} were archived at {batch.archived_at} (kept 29 days)")
    return batch


def batches_results(client: BatchClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.output is None:
        extras = [flag for flag, on in (("--format parquet", args.format != "jsonl"), ("--split", args.split),
                  ("--compression", args.compression is not None), ("--json", args.json),
                  ("--destination-conn-id", args.destination_conn_id is not None)) if on]  # fmt: skip
        if extras:
            raise UsageError(f"{', '.join(extras)} need -o PATH_OR_URI (without -o the raw stream goes to stdout)")
    else:
        _refuse_symlinked_output(args.output)
    batch = _ended(client, args.batch_id)
    _check_results_url(client, batch)
    total = batch.request_counts.total
    if args.output is None:
        return _results_to_stdout(client, batch, total, err)
    return _results_export(client, batch, args, out, err)


def _check_results_url(client: BatchClient, batch: MessageBatch) -> None:
    """Refuse a results_url off the API's origin (exit status 10) before the export creates its folder.

    The client refuses it anyway when the download starts; asking first means a refused URL
    leaves nothing behind at ``-o``, not even an empty folder.
    """
    config = getattr(client, "config", None)
    if config is not None:
        from airflow_provider_anthropix.api.calls import results_url_for

        results_url_for(config, batch, redact=config.redactor())


def _local_path(output: str) -> str | None:
    """The local path ``-o`` names (a plain path or a ``file://`` URI), or None for another store."""
    from urllib.parse import unquote, urlsplit

    target = output.strip()
    if target.startswith("file://"):
        return unquote(urlsplit(target).path)
    if "://" in target:
        return None
    return os.path.abspath(target)


def _refuse_symlinked_output(output: str, flag: str = "-o") -> None:
    """``-o`` may not be a symbolic link (exit status 2), checked before anything is downloaded.

    The export writes into its folder and removes there what it would itself write (stale
    results of an earlier export, its staging folder): through a link, those writes and
    removals would land in whatever the link points to, which may be somewhere else entirely
    by the time the export publishes. Naming the real folder makes the place explicit.
    """
    path = _local_path(output)
    if path is None:
        return
    bare = path.rstrip("/") or "/"
    if os.path.islink(bare):
        raise UsageError(
            f"{flag} {output}: is a symbolic link (to {os.readlink(bare)}); the export writes and removes files in "
            f"its folder, so it does not follow links: give the real folder, e.g. {flag} {os.path.realpath(bare)}"
        )


def _results_to_stdout(client: BatchClient, batch: MessageBatch, total: int, err: TextIO) -> int:
    """The served bytes, untouched, to standard output (``> file`` or ``| jq``)."""
    sink = sys.stdout.buffer
    with Bar(batch.id, total, "results", stream=err, min_interval=2.0) as bar:
        for chunk in counted(client.iter_result_bytes(batch, chunk_size=RESULTS_CHUNK_BYTES), bar):
            sink.write(chunk)
    sink.flush()
    return 0


def _results_export(
    client: BatchClient, batch: MessageBatch, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """The fetch operator's export: staged, checked against the counts, published with a manifest."""
    from airflow_provider_anthropix.io.checks import ResultsMismatchError
    from airflow_provider_anthropix.io.export import ExportOptions, export_results
    from airflow_provider_anthropix.io.publish import AtomicPublisher, DestinationError, resolve_destination
    from airflow_provider_anthropix.io.summary import ResultsFormatError

    target = args.output.strip()
    if "://" not in target:
        target = os.path.abspath(target)  # a path is relative to where the person typed it
    try:
        options = ExportOptions(
            output_format=args.format,
            compression=args.compression,
            split_by_result_type=args.split,
            progress_interval=3600.0,  # the bar shows progress; no log lines on top
        )
        destination = resolve_destination(target, args.destination_conn_id)
        publisher = AtomicPublisher(destination)
        with Bar(batch.id, batch.request_counts.total, "results", stream=err, min_interval=2.0) as bar:
            result = export_results(
                counted(client.iter_result_bytes(batch, chunk_size=RESULTS_CHUNK_BYTES), bar),
                destination,
                batch_id=batch.id,
                expected=batch.request_counts,
                options=options,
                publisher=publisher,
                logger=_QUIET,
            )
    except (ValueError, DestinationError, ResultsMismatchError, ResultsFormatError) as exc:
        raise ExportFailed(str(exc)) from None
    summary = result.xcom()
    if args.json:
        _emit_json(summary, out)
        return 0
    cost = summary.get("estimated_cost_usd")
    out.write(f"{summary['lines']:,} results of {batch.id} in {publisher.uri}\n")
    for item in summary.get("files") or []:
        name = item.get("name") if isinstance(item, dict) else item
        out.write(f"  {name}\n")
    out.write(f"manifest: {summary['manifest']}\n")
    if cost is not None:
        out.write(f"estimated cost: ${cost:,.4f}\n")
    return 0


def _stderr_logger(err: TextIO) -> logging.Logger:
    """A logger of its own (no parent, no global state) whose warnings go to ``err`` as ``anthropix: warning: ...``."""
    logger = logging.Logger("anthropix.archive", level=logging.WARNING)
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("anthropix: warning: %(message)s"))
    logger.addHandler(handler)
    return logger


def batches_archive(client: BatchClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Export every ended batch not archived yet to ``--to/<batch_id>/`` (:func:`io.archive.archive_batches`)."""
    from airflow_provider_anthropix.io.archive import archive_batches
    from airflow_provider_anthropix.io.export import ExportOptions
    from airflow_provider_anthropix.io.publish import DestinationError, resolve_destination

    _refuse_symlinked_output(args.to, flag="--to")
    target = args.to.strip()
    if "://" not in target:
        target = os.path.abspath(target)  # a path is relative to where the person typed it

    def with_bar(batch: MessageBatch, chunks: Iterable[bytes]) -> Iterator[bytes]:
        with Bar(batch.id, batch.request_counts.total, "results", stream=err, min_interval=2.0) as bar:
            yield from counted(chunks, bar)

    try:
        destination = resolve_destination(target, args.destination_conn_id)
        report = archive_batches(
            client,
            destination,
            older_than=args.older_than,
            options=ExportOptions(progress_interval=3600.0),  # the bar shows progress; no log lines on top
            logger=_stderr_logger(err),
            wrap_stream=with_bar,
        )
    except DestinationError as exc:
        raise ExportFailed(str(exc)) from None
    if args.json:
        _emit_json(report.to_dict(), out)
    else:
        out.write(render.archive_report(report) + "\n")
    if report.errors:
        batch_id, first = report.errors[0]
        if isinstance(first, ValueError | OSError | DestinationError):
            first = ExportFailed(str(first))
        raise ArchiveIncomplete(
            f"{len(report.errors)} of {len(report.entries)} batches could not be archived; the first, {batch_id}: "
            f"{first}",
            first,
        )
    return 0

"""Keep every ended batch's results before the API drops them: one export per batch under an archive folder.

The API keeps a batch's results for 29 days after the batch was created; then it sets
``archived_at`` and the download fails. :func:`archive_batches` lists every batch of a key
(all pages) and exports each ended one whose results are not archived yet, with the export
``anthropix batches results -o`` and ``FetchBatchResultsOperator`` run
(:func:`~airflow_provider_anthropix.io.export.export_results`: staged, checked against the
batch's counts, published all at once with ``_manifest.json`` last).

Layout: ``DEST/<batch_id>/`` holds one batch's ``results.jsonl`` and ``_manifest.json``. A
batch counts as archived when ``DEST/<batch_id>/_manifest.json`` is a readable manifest of
a complete export that names that batch id and lists files that are all there at their sizes.
Anything else (no manifest, one that does not parse, is too large, names another batch, is
marked incomplete, or lists a file that is missing or has another size) proves nothing: the
batch is exported again, over it, while its results can still be downloaded. Nothing else in
the folder is read or trusted, and ids read from the API are checked before they name a folder.

Run it again and it exports nothing new: that is the point (``@daily`` in
``example_dags/archive_results.py``, or ``anthropix batches archive`` from cron). Airflow-free
apart from the object-storage path: the CLI passes its client, the example DAG the hook.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import pendulum
from airflow.sdk import ObjectStoragePath
from pendulum import DateTime

from airflow_provider_anthropix.api.errors import NotFoundError
from airflow_provider_anthropix.api.models import MessageBatch
from airflow_provider_anthropix.api.retention import RESULTS_KEPT
from airflow_provider_anthropix.io.export import ExportOptions, export_results
from airflow_provider_anthropix.io.publish import (
    MANIFEST_NAME,
    AtomicPublisher,
    check_destination_writable,
    destination_uri,
    is_plain_name,
    protocol_of,
)

#: Batches whose results expire sooner than this are warned about.
EXPIRY_WARNING = timedelta(days=3)
#: A manifest larger than this is not one the export wrote (ours are a few KB): not read.
MAX_MANIFEST_BYTES = 1 << 20
#: Bytes asked of the network per read, as the fetch operator does.
RESULTS_CHUNK_BYTES = 1 << 20

#: What happened to each batch (``ArchiveEntry.status``).
EXPORTED = "exported"
ALREADY_ARCHIVED = "already_archived"
EXPIRED = "expired"
FAILED = "failed"
NOT_ENDED = "not_ended"
STATUSES = (EXPORTED, ALREADY_ARCHIVED, EXPIRED, FAILED, NOT_ENDED)

log = logging.getLogger(__name__)


class ArchiveClient(Protocol):
    """What the archive uses of a client: the hook and :class:`SyncClient` both have it."""

    def iter_batches(self, page_size: int = 100) -> Iterator[MessageBatch]: ...
    def get_batch(self, batch_id: str) -> MessageBatch: ...
    def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = 1 << 16) -> Iterator[bytes]: ...


def current_time() -> DateTime:
    """Now, in UTC: what ages and expiry are reckoned from (tests move it with the emulator's clock)."""
    return pendulum.now("UTC")


def results_expire_at(batch: MessageBatch) -> DateTime | None:
    """When the batch's results stop being downloadable: 29 days after its creation (None if not known)."""
    return None if batch.created_at is None else batch.created_at.in_timezone("UTC") + RESULTS_KEPT


def _iso(value: DateTime | None) -> str | None:
    return None if value is None else value.in_timezone("UTC").to_iso8601_string()


@dataclass
class ArchiveEntry:
    """One batch of the run: what was done with it and why.

    ``expiring_soon``: ended, results still there, expiring within the warning window, and not
    archived before this run (exported now, or failed).
    """

    batch_id: str
    status: str
    created_at: str | None = None
    results_expire_at: str | None = None
    expiring_soon: bool = False
    folder: str | None = None
    lines: int | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "status": self.status,
            "created_at": self.created_at,
            "results_expire_at": self.results_expire_at,
            "expiring_soon": self.expiring_soon,
            "folder": self.folder,
            "lines": self.lines,
            "note": self.note,
        }


@dataclass
class ArchiveReport:
    """Every selected batch's entry, newest first, and what the run left out.

    :param listed: batches the key has (every page of the list).
    :param too_recent: of those, created less than ``older_than`` ago (not looked at).
    :param errors: the failures' exceptions, in the order of ``entries`` (not serialized).
    """

    destination: str
    now: str
    older_than_seconds: float | None
    listed: int = 0
    too_recent: int = 0
    entries: list[ArchiveEntry] = field(default_factory=list)
    errors: list[tuple[str, BaseException]] = field(default_factory=list, repr=False)

    def of(self, status: str) -> list[ArchiveEntry]:
        return [entry for entry in self.entries if entry.status == status]

    @property
    def expiring_soon(self) -> list[ArchiveEntry]:
        return [entry for entry in self.entries if entry.expiring_soon]

    def counts(self) -> dict[str, int]:
        """``exported``, ``already_archived``, ``expiring_soon``, ``expired``, ``failed``, ``not_ended``, ``too_recent``."""
        counts = {status: len(self.of(status)) for status in STATUSES}
        return {
            EXPORTED: counts[EXPORTED],
            ALREADY_ARCHIVED: counts[ALREADY_ARCHIVED],
            "expiring_soon": len(self.expiring_soon),
            EXPIRED: counts[EXPIRED],
            FAILED: counts[FAILED],
            NOT_ENDED: counts[NOT_ENDED],
            "too_recent": self.too_recent,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "now": self.now,
            "older_than_seconds": self.older_than_seconds,
            "listed": self.listed,
            "counts": self.counts(),
            "batches": [entry.to_dict() for entry in self.entries],
        }

    def summary(self, limit: int = 100) -> dict[str, Any]:
        """For XCom: the counts and the ids that need a person's eye (at most ``limit`` of each)."""
        return {
            "destination": self.destination,
            "counts": self.counts(),
            "exported": [e.batch_id for e in self.of(EXPORTED)][:limit],
            "expiring_soon": [e.batch_id for e in self.expiring_soon][:limit],
            "expired": [e.batch_id for e in self.of(EXPIRED)][:limit],
            "failed": [e.batch_id for e in self.of(FAILED)][:limit],
        }


def _is_local_link(folder: ObjectStoragePath) -> bool:
    return protocol_of(folder) in ("file", "local") and os.path.islink(str(folder.path).rstrip("/"))


def archived_manifest(folder: ObjectStoragePath, batch_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(manifest, None)`` when ``folder`` holds a complete export of ``batch_id``; else ``(None, why not)``.

    ``why not`` is None when there is simply no manifest. The manifest is untrusted input: it
    is read only up to :data:`MAX_MANIFEST_BYTES`, and its file list is checked against the
    folder (plain names only, each there with the size it states) before it counts.
    """
    fs = folder.fs
    root = str(folder.path).rstrip("/")
    path = f"{root}/{MANIFEST_NAME}"
    try:
        fs.invalidate_cache(path)
        with fs.open(path, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except Exception as exc:
        return None, f"its {MANIFEST_NAME} cannot be read ({type(exc).__name__})"
    if len(raw) > MAX_MANIFEST_BYTES:
        return None, f"its {MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES:,} bytes: not one the export wrote"
    try:
        manifest = json.loads(raw)
    except ValueError:
        return None, f"its {MANIFEST_NAME} is not valid JSON"
    if not isinstance(manifest, dict):
        return None, f"its {MANIFEST_NAME} is not a JSON object"
    named = manifest.get("batch_id")
    if named != batch_id:
        shown = repr(named) if isinstance(named, str) and is_plain_name(named) else "something else"
        return None, f"its {MANIFEST_NAME} names batch {shown}, not {batch_id}"
    if manifest.get("complete") is not True:
        return None, f"its {MANIFEST_NAME} does not say the export was complete"
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        return None, f"its {MANIFEST_NAME} lists no files"
    for item in files:
        name = item.get("name") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        if not isinstance(name, str) or not is_plain_name(name) or name.startswith("_"):
            return None, f"its {MANIFEST_NAME} lists a file name that the export does not write"
        try:
            actual = fs.size(f"{root}/{name}")
        except FileNotFoundError:
            return None, f"{name}, listed in its {MANIFEST_NAME}, is missing"
        except Exception as exc:
            return None, f"{name}, listed in its {MANIFEST_NAME}, cannot be checked ({type(exc).__name__})"
        if not isinstance(size, int) or isinstance(size, bool) or actual != size:
            return None, f"{name} has {actual} bytes, not the {size!r} its {MANIFEST_NAME} states"
    return manifest, None


def archive_batches(
    client: ArchiveClient,
    destination: ObjectStoragePath,
    *,
    older_than: timedelta | None = None,
    now: DateTime | None = None,
    warn_within: timedelta = EXPIRY_WARNING,
    options: ExportOptions | None = None,
    logger: logging.Logger | None = None,
    wrap_stream: Callable[[MessageBatch, Iterable[bytes]], Iterable[bytes]] | None = None,
    page_size: int = 100,
) -> ArchiveReport:
    """Export every ended, not yet archived batch of ``client`` to ``destination/<batch_id>/``; see the module docstring.

    :param older_than: only batches created at least this long ago (None: every batch).
    :param now: the time ages and expiry are reckoned from (default :func:`current_time`).
    :param warn_within: batches whose results expire sooner are logged as a warning.
    :param options: the export's (default: ``results.jsonl``, checked against the counts).
    :param wrap_stream: wraps each batch's byte stream (the CLI draws a progress bar with it).

    One batch failing (a stream cut for good, a result that does not match) does not stop the
    others: it is recorded in the report (``failed``, and its exception in ``errors``) and the
    run goes on, since the next batch may be the one about to expire. Listing errors and a
    destination that cannot be written are raised at once: nothing can be done without them.
    """
    logger = logger or log
    now = (now or current_time()).in_timezone("UTC")
    options = options or ExportOptions()
    report = ArchiveReport(
        destination=destination_uri(destination),
        now=now.to_iso8601_string(),
        older_than_seconds=older_than.total_seconds() if older_than is not None else None,
    )
    check_destination_writable(destination)
    for batch in client.iter_batches(page_size=page_size):
        report.listed += 1
        if older_than is not None and batch.created_at is not None and now - batch.created_at < older_than:
            report.too_recent += 1
            continue
        entry = _archive_one(client, batch, destination, now, warn_within, options, logger, wrap_stream, report)
        report.entries.append(entry)
        expire_at = results_expire_at(batch)
        if entry.expiring_soon and expire_at is not None:
            fate = "exported now" if entry.status == EXPORTED else f"NOT archived: {entry.note}"
            logger.warning(
                "%s: results expire in %s (%s): %s", entry.batch_id, time_left(expire_at - now), _iso(expire_at), fate
            )
    counts = report.counts()
    logger.info(
        "Archive %s: %s (%d batches listed)",
        report.destination,
        ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items()),
        report.listed,
    )
    return report


def time_left(left: timedelta) -> str:
    """``41 h`` under two days, ``2.5 days`` beyond."""
    seconds = left.total_seconds()
    return f"{seconds / 3600:.0f} h" if seconds < 2 * 86_400 else f"{seconds / 86_400:.1f} days"


def _archive_one(
    client: ArchiveClient,
    batch: MessageBatch,
    destination: ObjectStoragePath,
    now: DateTime,
    warn_within: timedelta,
    options: ExportOptions,
    logger: logging.Logger,
    wrap_stream: Callable[[MessageBatch, Iterable[bytes]], Iterable[bytes]] | None,
    report: ArchiveReport,
) -> ArchiveEntry:
    expire_at = results_expire_at(batch)
    entry = ArchiveEntry(
        batch_id=batch.id, status=NOT_ENDED, created_at=_iso(batch.created_at), results_expire_at=_iso(expire_at)
    )
    if not batch.is_ended:
        entry.note = f"still {batch.processing_status}: archived by a later run"
        return entry
    if not is_plain_name(batch.id):
        # The id names a folder: one from the API that could climb out of the destination is refused.
        entry.status, entry.note = FAILED, "the API gave an id that is not a plain name; not used as a folder"
        report.errors.append((batch.id, ValueError(f"batch id {batch.id[:80]!r} is not a plain name")))
        return entry
    folder = destination / batch.id
    entry.folder = destination_uri(folder)
    manifest, why_not = archived_manifest(folder, batch.id)
    if manifest is not None:
        entry.status = ALREADY_ARCHIVED
        entry.lines = manifest.get("lines") if isinstance(manifest.get("lines"), int) else None
        return entry
    if batch.is_archived:
        entry.status = EXPIRED
        entry.note = f"results archived by the API at {_iso(batch.archived_at)}" + (f"; {why_not}" if why_not else "")
        return entry
    entry.expiring_soon = expire_at is not None and expire_at - now <= warn_within
    if why_not is not None:
        logger.warning("%s: %s is not proof of an archive: %s; exporting it again", batch.id, entry.folder, why_not)
    if _is_local_link(folder):
        entry.status, entry.note = FAILED, "its folder is a symbolic link: the export does not write through links"
        report.errors.append((batch.id, ValueError(f"{entry.folder} is a symbolic link")))
        return entry
    try:
        chunks: Iterable[bytes] = client.iter_result_bytes(batch, chunk_size=RESULTS_CHUNK_BYTES)
        if wrap_stream is not None:
            chunks = wrap_stream(batch, chunks)
        result = export_results(
            chunks,
            folder,
            batch_id=batch.id,
            expected=batch.request_counts,
            options=options,
            logger=logger,
            publisher=AtomicPublisher(folder),
        )
    except NotFoundError as exc:
        gone = _archived_meanwhile(client, batch.id)
        if gone is not None:
            entry.status, entry.expiring_soon = EXPIRED, False
            entry.note = f"results archived by the API at {_iso(gone)}, before they could be downloaded"
            return entry
        return _failed(entry, report, exc)
    except Exception as exc:  # one batch's trouble must not keep the others from being archived
        return _failed(entry, report, exc)
    entry.status = EXPORTED
    entry.lines = result.manifest.get("lines")
    return entry


def _archived_meanwhile(client: ArchiveClient, batch_id: str) -> DateTime | None:
    try:
        return client.get_batch(batch_id).archived_at
    except Exception:
        return None


def _failed(entry: ArchiveEntry, report: ArchiveReport, exc: BaseException) -> ArchiveEntry:
    entry.status = FAILED
    entry.note = f"{type(exc).__name__}: {exc}"
    report.errors.append((entry.batch_id, exc))
    return entry

"""Human output: aligned tables with counts and a progress bar, and the timestamps people read.

Plain string formatting rather than a terminal library: the output is the same on a
terminal, in a pipe and in a test, and columns never wrap.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from airflow_provider_anthropix.api.models import MessageBatch

if TYPE_CHECKING:
    from airflow_provider_anthropix.io.archive import ArchiveReport

BAR_WIDTH = 16


def _glyphs(stream: TextIO) -> tuple[str, str]:
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return ("█", "░") if encoding.startswith("utf") else ("#", ".")


def progress_bar(done: int, total: int, width: int = BAR_WIDTH, stream: TextIO | None = None) -> str:
    """``████████░░░░░░░░  50%``: the share of requests that have left ``processing``."""
    full, empty = _glyphs(stream or sys.stdout)
    share = done / total if total else 1.0
    filled = round(share * width)
    return f"{full * filled}{empty * (width - filled)} {share:4.0%}"


def when(value: Any) -> str:
    """A timestamp to the minute in UTC (``2026-12-01 22:44Z``), or ``-``."""
    if value is None:
        return "-"
    return str(value.in_timezone("UTC").format("YYYY-MM-DD HH:mm")) + "Z"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    """Columns padded to their widest cell; those in ``right`` aligned right (numbers)."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


LIST_HEADERS = ("ID", "STATUS", "PROGRESS", "DONE", "SUCCEEDED", "ERRORED", "CANCELED", "EXPIRED", "CREATED", "ENDED")


def batch_row(batch: MessageBatch, stream: TextIO | None = None) -> list[str]:
    counts = batch.request_counts
    return [
        batch.id,
        batch.processing_status,
        progress_bar(counts.done, counts.total, stream=stream),
        f"{counts.done:,}/{counts.total:,}",
        f"{counts.succeeded:,}",
        f"{counts.errored:,}",
        f"{counts.canceled:,}",
        f"{counts.expired:,}",
        when(batch.created_at),
        when(batch.ended_at),
    ]


def batch_table(batches: Sequence[MessageBatch], stream: TextIO | None = None) -> str:
    return table(LIST_HEADERS, [batch_row(b, stream) for b in batches], right=frozenset({3, 4, 5, 6, 7}))


def batch_details(batch: MessageBatch, stream: TextIO | None = None) -> str:
    """``show``: one field a line, the counts as a small table."""
    counts = batch.request_counts
    fields = [
        ("id", batch.id),
        ("status", batch.processing_status),
        ("progress", f"{progress_bar(counts.done, counts.total, stream=stream)}  {counts.done:,}/{counts.total:,}"),
        ("created", when(batch.created_at)),
        ("expires", when(batch.expires_at)),
        ("cancel asked", when(batch.cancel_initiated_at)),
        ("ended", when(batch.ended_at)),
        ("archived", when(batch.archived_at)),
        ("results", batch.results_url or "-"),
    ]
    width = max(len(name) for name, _ in fields)
    head = "\n".join(f"{name.ljust(width)}  {value}" for name, value in fields)
    kinds = counts.to_dict()
    counts_table = table(list(kinds), [[f"{n:,}" for n in kinds.values()]], right=frozenset(range(len(kinds))))
    return f"{head}\n\n{counts_table}"


ARCHIVE_HEADERS = ("BATCH", "CREATED", "RESULTS UNTIL", "LINES", "ARCHIVE")
_ARCHIVE_LABELS = {
    "exported": "exported",
    "already_archived": "already archived",
    "expired": "EXPIRED: results gone",
    "failed": "FAILED",
    "not_ended": "not ended yet",
}


def _iso_minute(value: str | None) -> str:
    """``2026-12-01T22:44:05.123456Z`` as ``2026-12-01 22:44Z`` (the report keeps ISO strings)."""
    return f"{value[:16].replace('T', ' ')}Z" if value else "-"


def archive_report(report: ArchiveReport) -> str:
    """``archive``: a row per batch looked at, the notes of those that need a look, and the counts."""
    rows = []
    notes = []
    for entry in report.entries:
        label = _ARCHIVE_LABELS.get(entry.status, entry.status)
        if entry.expiring_soon:
            label += " (expiring soon)"
        lines = f"{entry.lines:,}" if isinstance(entry.lines, int) else "-"
        rows.append([entry.batch_id, _iso_minute(entry.created_at), _iso_minute(entry.results_expire_at), lines, label])
        if entry.note and entry.status in ("failed", "expired"):
            notes.append(f"{entry.batch_id}: {entry.note}")
    counts = report.counts()
    parts = [
        f"{counts['exported']:,} exported",
        f"{counts['already_archived']:,} already archived",
        f"{counts['expiring_soon']:,} expiring soon",
        f"{counts['expired']:,} expired",
    ]
    parts += [f"{counts[k]:,} {k.replace('_', ' ')}" for k in ("failed", "not_ended") if counts[k]]
    scope = f"{report.listed:,} batches listed"
    if report.too_recent:
        scope += f", {report.too_recent:,} created more recently than --older-than"
    head = table(ARCHIVE_HEADERS, rows, right=frozenset({3})) if rows else "no batches to archive"
    tail = "\n".join(notes)
    return "\n".join(part for part in (head, tail, f"\n{', '.join(parts)} ({scope}) in {report.destination}") if part)

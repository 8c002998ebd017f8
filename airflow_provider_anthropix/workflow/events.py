"""What the triggers send back, and the small summary of a batch that tasks push to XCom.

The triggers build these events and the operators read them; keeping the shapes in one place
(and checking them on the way in) means a malformed or foreign event fails clearly instead of
being half understood.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.models import MessageBatch

EVENT_STATUSES = ("success", "error", "timeout")


class EventError(AnthropixError, ValueError):
    """A trigger event that does not have the promised shape."""


def batch_summary(batch: MessageBatch) -> dict[str, Any]:
    """What downstream tasks need to know about a batch, small enough for XCom."""
    counts = batch.request_counts
    return {
        "batch_id": batch.id,
        "processing_status": batch.processing_status,
        "request_counts": counts.to_dict(),
        "total": counts.total,
        "created_at": _iso(batch.created_at),
        "ended_at": _iso(batch.ended_at),
        "expires_at": _iso(batch.expires_at),
        "results_url": batch.results_url,
    }


def _iso(value: Any) -> str | None:
    return value.to_iso8601_string() if value is not None else None


def _status(event: Any) -> str:
    if not isinstance(event, Mapping):
        raise EventError(f"unexpected trigger event {event!r}: expected a dict")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise EventError(f"unexpected trigger event status {status!r}")
    return str(status)


def parse_batch_event(event: Any) -> tuple[str, MessageBatch | None, str]:
    """A :class:`BatchEndedTrigger` event as ``(status, batch or None, message)``."""
    status = _status(event)
    raw = event.get("batch")
    batch = None
    if isinstance(raw, Mapping) and raw.get("processing_status"):
        batch = MessageBatch.from_dict(raw)
    message = str(event.get("message") or "")
    if status == "success" and (batch is None or not batch.is_ended):
        raise EventError(f"trigger reported success without an ended batch: {event!r}")
    return status, batch, message


def parse_batches_event(event: Any) -> tuple[str, list[str], str]:
    """A :class:`BatchesEndedTrigger` event as ``(status, ids of the batches that ended, message)``."""
    status = _status(event)
    ended = event.get("ended")
    if not isinstance(ended, Mapping):
        raise EventError(f"trigger event without its 'ended' batches: {event!r}")
    if status == "success" and not ended:
        raise EventError(f"trigger reported success without an ended batch: {event!r}")
    return status, [str(batch_id) for batch_id in ended], str(event.get("message") or "")

"""Finding the batch of a create whose answer was lost: same size, inside the window, not canceled, read newest first."""

from __future__ import annotations

from typing import Any

import pendulum

from airflow_provider_anthropix.api import MessageBatch
from airflow_provider_anthropix.api.recovery import find_created_batch


def batch(batch_id: str, created: str, total: int) -> MessageBatch:
    return MessageBatch.from_dict(
        {
            "id": batch_id,
            "processing_status": "in_progress",
            "request_counts": {"processing": total},
            "created_at": created,
        }
    )


def test_recovery_matches_count_inside_the_window_and_stops_at_older_batches() -> None:
    listing = [
        batch("too-new", "2026-11-25T10:10:00Z", 3),
        batch("other-count", "2026-11-25T10:04:00Z", 4),
        batch("ours", "2026-11-25T10:03:00Z", 3),
        batch("too-old", "2026-11-25T09:00:00Z", 3),
    ]
    seen: list[str] = []

    def newest_first() -> Any:
        for b in listing:
            seen.append(b.id)
            yield b

    found = find_created_batch(
        newest_first(),
        request_count=3,
        window_start=pendulum.parse("2026-11-25T10:00:00Z"),  # type: ignore[arg-type]
        window_end=pendulum.parse("2026-11-25T10:05:00Z"),  # type: ignore[arg-type]
    )
    assert [b.id for b in found] == ["ours"]
    assert seen == ["too-new", "other-count", "ours", "too-old"]


def test_recovery_ignores_canceled_batches() -> None:
    """Canceling the unwanted candidates is how a user resolves an ambiguous recovery."""
    canceled = MessageBatch.from_dict(
        batch("canceled", "2026-11-25T10:02:00Z", 3).to_dict() | {"cancel_initiated_at": "2026-11-25T10:06:00Z"}
    )
    found = find_created_batch(
        [batch("kept", "2026-11-25T10:03:00Z", 3), canceled],
        request_count=3,
        window_start=pendulum.parse("2026-11-25T10:00:00Z"),  # type: ignore[arg-type]
        window_end=pendulum.parse("2026-11-25T10:05:00Z"),  # type: ignore[arg-type]
    )
    assert [b.id for b in found] == ["kept"]

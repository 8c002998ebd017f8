"""Lost-response recovery: find the batch that a create whose answer never arrived may have made."""

from __future__ import annotations

from collections.abc import Iterable

from pendulum import DateTime

from airflow_provider_anthropix.api.models import MessageBatch


def find_created_batch(
    batches: Iterable[MessageBatch],
    *,
    request_count: int,
    window_start: DateTime,
    window_end: DateTime,
) -> list[MessageBatch]:
    """The batches that could be the one a create with a lost answer made.

    ``batches`` is the list endpoint's order (newest first), so the scan stops at the first
    batch older than the window: it reads a page or two, not the account's history. A batch
    matches when it was created inside ``[window_start, window_end]`` with exactly
    ``request_count`` requests. The API has no idempotency key, so this is the strongest
    evidence available; callers adopt only a single, unambiguous match.
    """
    matches = []
    for batch in batches:
        created = batch.created_at
        if created is None or created > window_end:
            continue
        if created < window_start:
            break
        if batch.cancel_initiated_at is not None:
            # A canceled batch is not a candidate: canceling the unwanted ones is how a user
            # resolves an ambiguous match.
            continue
        if batch.request_counts.total == request_count:
            matches.append(batch)
    return matches

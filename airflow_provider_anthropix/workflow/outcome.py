"""The outcome policy: decides whether an ended batch is good enough for the next task.

Shared by :class:`~airflow_provider_anthropix.sensors.batch.BatchEndedSensor` (judging by the
batch's request counts as soon as it ends) and
:class:`~airflow_provider_anthropix.operators.fetch.FetchBatchResultsOperator` (judging after
the results have been published, with the errors counted by type). The second is the
"land, then gate" pattern: the errored lines a person needs to look at are stored before
the task fails. No Airflow imports here: the callers turn a failed :class:`Outcome` into
their own exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_anthropix.api.models import MessageBatch

#: Error types of a result line that another attempt can fix (the API's own fault or load);
#: the job sends those requests again in a retry round unless told otherwise.
RETRYABLE_ERROR_TYPES = ("api_error", "overloaded_error")

#: How many error types a message names before summing up the rest.
MAX_TYPES_SHOWN = 10


@dataclass(frozen=True)
class Outcome:
    """The policy's verdict on an ended batch, and the sentence that explains it."""

    ok: bool
    message: str


def check_max_errored_ratio(value: float | None) -> float | None:
    """``None`` (the check is off) or a share between 0 and 1; anything else is a ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"max_errored_ratio must be between 0 and 1 (or None for no limit), got {value!r}")
    return float(value)


def describe_error_types(errored_by_type: Mapping[str, int]) -> str:
    """``invalid_request_error: 12, overloaded_error: 3`` (most frequent first, at most ten named)."""
    ranked = sorted(errored_by_type.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{kind}: {count:,}" for kind, count in ranked[:MAX_TYPES_SHOWN])
    rest = sum(count for _, count in ranked[MAX_TYPES_SHOWN:])
    if rest:
        shown += f", {rest:,} of {len(ranked) - MAX_TYPES_SHOWN} other types"
    return shown


def evaluate_outcome(
    batch: MessageBatch,
    *,
    max_errored_ratio: float | None = 1.0,
    fail_on_canceled: bool = False,
    fail_on_expired: bool = False,
    errored_by_type: Mapping[str, int] | None = None,
) -> Outcome:
    """Judge an ended batch by its request counts.

    :param max_errored_ratio: fail when errored / total is above this (1.0 or None never fails on errors).
    :param fail_on_canceled: fail when any request was canceled.
    :param fail_on_expired: fail when any request expired (the batch hit its 24 h limit).
    :param errored_by_type: errored results counted per ``error.type`` (known once the results were
        read); named in the message so the failure says what went wrong, not only how often.
    """
    counts = batch.request_counts
    total = counts.total
    ratio = counts.errored / total if total else 0.0
    facts = (
        f"batch {batch.id}: {counts.succeeded:,} succeeded, {counts.errored:,} errored, "
        f"{counts.canceled:,} canceled, {counts.expired:,} expired of {total:,}"
    )
    if errored_by_type:
        facts += f" (errored by type: {describe_error_types(errored_by_type)})"
    reasons = []
    if max_errored_ratio is not None and ratio > max_errored_ratio:
        reasons.append(f"errored ratio {ratio:.1%} is above max_errored_ratio {max_errored_ratio:.1%}")
    if fail_on_canceled and counts.canceled:
        reasons.append(f"{counts.canceled:,} requests were canceled and fail_on_canceled is set")
    if fail_on_expired and counts.expired:
        reasons.append(f"{counts.expired:,} requests expired and fail_on_expired is set")
    if reasons:
        return Outcome(False, f"{facts}; failing: {'; '.join(reasons)}")
    if max_errored_ratio is None:
        return Outcome(True, f"{facts}; accepted (errored {ratio:.1%}; no max_errored_ratio set)")
    return Outcome(True, f"{facts}; accepted (errored {ratio:.1%} <= max_errored_ratio {max_errored_ratio:.1%})")

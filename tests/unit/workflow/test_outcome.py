"""The outcome policy of workflow/outcome.py: what fails, what the message says, no Airflow needed."""

from __future__ import annotations

import pytest

from airflow_provider_anthropix.api import MessageBatch
from airflow_provider_anthropix.workflow.outcome import check_max_errored_ratio, describe_error_types, evaluate_outcome


def ended(**counts: int) -> MessageBatch:
    return MessageBatch.from_dict(
        {"id": "msgbatch_1", "processing_status": "ended", "request_counts": counts, "created_at": None}
    )


def test_no_ratio_means_errors_never_fail() -> None:
    outcome = evaluate_outcome(ended(errored=10), max_errored_ratio=None)
    assert outcome.ok
    assert "no max_errored_ratio set" in outcome.message


def test_the_message_counts_errors_by_type_most_frequent_first() -> None:
    outcome = evaluate_outcome(
        ended(succeeded=5, errored=5),
        max_errored_ratio=0.2,
        errored_by_type={"overloaded_error": 1, "invalid_request_error": 4},
    )
    assert not outcome.ok
    assert "errored by type: invalid_request_error: 4, overloaded_error: 1" in outcome.message
    assert "errored ratio 50.0% is above max_errored_ratio 20.0%" in outcome.message


def test_many_error_types_are_summed_up_after_ten() -> None:
    text = describe_error_types({f"type_{i:02d}": 100 - i for i in range(13)})
    assert text.startswith("type_00: 100, type_01: 99")
    assert "type_10" not in text
    assert text.endswith(", 267 of 3 other types")


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.1", True, float("nan")])
def test_a_bad_ratio_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="max_errored_ratio must be between 0 and 1"):
        check_max_errored_ratio(value)  # type: ignore[arg-type]
    assert check_max_errored_ratio(None) is None
    assert check_max_errored_ratio(0) == 0.0

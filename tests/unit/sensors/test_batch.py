"""The outcome policy, the summary XCom and trigger-event validation of BatchEndedSensor."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_provider_anthropix.api import MessageBatch
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor, evaluate_outcome, validate_event
from airflow_provider_anthropix.workflow.events import batch_summary


def ended(**counts: int) -> MessageBatch:
    return MessageBatch.from_dict(
        {
            "id": "msgbatch_1",
            "processing_status": "ended",
            "request_counts": counts,
            "created_at": "2026-11-25T10:00:00.000000Z",
            "ended_at": "2026-11-25T10:30:00.000000Z",
            "results_url": "https://api.example/v1/messages/batches/msgbatch_1/results",
        }
    )


@pytest.mark.smoke
def test_errored_ratio_above_the_limit_fails_and_says_why() -> None:
    outcome = evaluate_outcome(ended(succeeded=7, errored=3), max_errored_ratio=0.2)
    assert not outcome.ok
    assert "7 succeeded, 3 errored, 0 canceled, 0 expired of 10" in outcome.message
    assert "errored ratio 30.0% is above max_errored_ratio 20.0%" in outcome.message
    assert evaluate_outcome(ended(succeeded=7, errored=3), max_errored_ratio=0.3).ok
    assert evaluate_outcome(ended(errored=10)).ok  # default 1.0: never fails on errors


def test_canceled_and_expired_fail_only_when_asked() -> None:
    batch = ended(succeeded=5, canceled=2, expired=1)
    assert evaluate_outcome(batch).ok
    assert "2 requests were canceled" in evaluate_outcome(batch, fail_on_canceled=True).message
    assert "1 requests expired" in evaluate_outcome(batch, fail_on_expired=True).message


def test_summary_is_small_and_json_plain() -> None:
    summary = batch_summary(ended(succeeded=2, errored=1))
    assert summary == {
        "batch_id": "msgbatch_1",
        "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0},
        "total": 3,
        "created_at": "2026-11-25T10:00:00Z",
        "ended_at": "2026-11-25T10:30:00Z",
        "expires_at": None,
        "results_url": "https://api.example/v1/messages/batches/msgbatch_1/results",
    }


@pytest.mark.parametrize(
    "event",
    [None, "success", {"status": "weird"}, {"status": "success", "batch": {"id": "x"}, "message": ""}],
)
def test_malformed_events_are_rejected(event: Any) -> None:
    with pytest.raises(AirflowException):
        validate_event(event)


def test_valid_events() -> None:
    status, batch, message = validate_event(
        {"status": "success", "batch": ended(succeeded=1).to_dict(), "message": "m"}
    )
    assert (status, message) == ("success", "m")
    assert batch is not None and batch.is_ended
    assert validate_event({"status": "timeout", "batch": {"id": "x"}, "message": "late"})[1:] == (None, "late")


def test_arguments_are_checked_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="on_timeout"):
        BatchEndedSensor(task_id="s", batch_id="b", on_timeout="explode")
    with pytest.raises(ValueError, match="max_errored_ratio"):
        BatchEndedSensor(task_id="s", batch_id="b", max_errored_ratio=2)
    sensor = BatchEndedSensor(task_id="s", batch_id="b", poll_interval=7, timeout=100)
    assert (sensor.poke_interval, sensor.timeout) == (7, 100)

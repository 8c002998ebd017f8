"""BatchEndedTrigger without a server: its serialization (this release's and the previous one's) and its progress line."""

from __future__ import annotations

import json

import pytest

from airflow_provider_anthropix.api import MessageBatch
from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger, describe_progress


@pytest.mark.smoke
def test_serialize_round_trip_with_plain_values_only() -> None:
    trigger = BatchEndedTrigger(
        batch_id="msgbatch_1", anthropix_conn_id="c", poll_interval=5, deadline="2026-11-26T10:00:00Z", jitter=0.2
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_anthropix.triggers.batch.BatchEndedTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain JSON values, nothing else
    again = BatchEndedTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert set(kwargs) == {
        "batch_id",
        "anthropix_conn_id",
        "poll_interval",
        "deadline",
        "jitter",
        "max_poll_failures",
        "progress_log_interval",
        "first_poll_delay",
    }


def test_progress_line_reads_like_a_sentence() -> None:
    batch = MessageBatch.from_dict(
        {
            "id": "msgbatch_x",
            "processing_status": "in_progress",
            "request_counts": {"processing": 58_800, "succeeded": 40_888, "errored": 312},
        }
    )
    assert describe_progress(batch, rate=70.0) == (
        "batch msgbatch_x in_progress: 41,200/100,000 done (41%), 312 errored, eta ~14 min"
    )


@pytest.mark.smoke
def test_triggers_serialized_by_the_previous_release_still_load() -> None:
    """A triggerer upgraded mid-deferral rebuilds triggers from kwargs an older version wrote."""
    from airflow_provider_anthropix.triggers.job import BatchesEndedTrigger

    single = {
        "batch_id": "msgbatch_1",
        "anthropix_conn_id": "c",
        "poll_interval": 5.0,
        "deadline": "2026-11-26T10:00:00Z",
        "jitter": 0.2,
        "max_poll_failures": 3,
        "progress_log_interval": 30.0,
        "first_poll_delay": 5.0,
    }
    several = {
        "batch_ids": ["msgbatch_1", "msgbatch_2"],
        "anthropix_conn_id": "c",
        "wait_for": "any",
        "poll_interval": 5.0,
        "deadline": None,
        "jitter": 0.1,
        "max_poll_failures": 10,
        "progress_log_interval": 300.0,
        "first_poll_delay": 0.0,
        "job_progress": {"requests": 10, "round": 1},
    }
    for cls, kwargs in ((BatchEndedTrigger, single), (BatchesEndedTrigger, several)):
        classpath, again = cls(**kwargs).serialize()  # type: ignore[arg-type]
        assert classpath == f"{cls.__module__}.{cls.__qualname__}"
        assert again == kwargs

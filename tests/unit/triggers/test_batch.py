"""BatchEndedTrigger's serialization and its small pure helpers."""

from __future__ import annotations

import json
import random

import pytest

from airflow_provider_anthropix.api import (
    AnthropixConnectionError,
    AuthenticationError,
    MessageBatch,
    NotFoundError,
    OverloadedError,
    RateLimitError,
)
from airflow_provider_anthropix.api.errors import error_from_response
from airflow_provider_anthropix.api.retry import is_transient
from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger, describe_progress
from airflow_provider_anthropix.triggers.polling import jittered, next_poll_wait


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


def test_jitter_stays_in_its_band() -> None:
    rng = random.Random(1)
    draws = [jittered(10.0, 0.1, rng) for _ in range(500)]
    assert min(draws) >= 9.0
    assert max(draws) <= 11.0
    assert max(draws) - min(draws) > 1.0  # actually spread
    assert jittered(10.0, 0.0) == 10.0


def test_transient_errors_are_waited_out_and_the_rest_are_not() -> None:
    assert is_transient(OverloadedError("o", status=529))
    assert is_transient(RateLimitError("r", status=429))
    assert is_transient(AnthropixConnectionError("reset"))
    assert not is_transient(AuthenticationError("k", status=401))
    assert not is_transient(NotFoundError("n", status=404))
    for edge_status in (501, 520, 522, 524):  # a CDN in front of the API: still worth waiting out
        assert is_transient(error_from_response(edge_status, {}, b""))
    assert not is_transient(error_from_response(503, {"x-should-retry": "false"}, b""))


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


def test_a_huge_retry_after_is_capped() -> None:
    """A proxy's ``retry-after: 86400`` must not put the wait to sleep past its deadline."""
    assert next_poll_wait(5.0, 0.1, 1, 86_400.0) == 600.0
    assert next_poll_wait(5.0, 0.1, 1, 7.0) == 7.0
    assert 4.5 <= next_poll_wait(5.0, 0.1, 0, 86_400.0) <= 5.5  # no failure: the interval, hint or not


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

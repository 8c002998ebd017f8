"""BatchEndedTrigger.run() against the emulator over loopback: one event per run, the right one."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pendulum
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger

KEY = "sk-ant-emulator-test-key"  # the session emulator's key (tests/conftest.py)


def make_batch(n: int = 3, prompt: str = "hello") -> str:
    requests = [
        {
            "custom_id": f"r-{i}",
            "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": f"{prompt} {i}"}]},
        }
        for i in range(n)
    ]
    return AnthropixHook().create_batch(requests).id


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, emulator: EmulatorHandle, **fields: Any) -> None:
    conn = {"conn_type": "anthropix", "password": KEY, "host": emulator.url, **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


async def events_of(trigger: BatchEndedTrigger, limit: float = 20.0) -> list[dict[str, Any]]:
    """Every event the trigger yields (there must be exactly one), with a safety limit."""

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(collect(), limit)


@pytest.mark.smoke
async def test_success_event_carries_the_ended_batch(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    batch_id = make_batch(3)
    trigger = BatchEndedTrigger(batch_id=batch_id, poll_interval=0.05)
    # the deferral round trip: the triggerer rebuilds the trigger from its serialized form
    _classpath, kwargs = trigger.serialize()
    assert KEY not in json.dumps(kwargs)
    events = await events_of(BatchEndedTrigger(**kwargs))
    assert len(events) == 1
    event = events[0]
    assert event["status"] == "success"
    assert event["batch"]["id"] == batch_id
    assert event["batch"]["processing_status"] == "ended"
    assert event["batch"]["request_counts"]["succeeded"] == 3
    assert batch_id in event["message"]
    assert KEY not in json.dumps(event)
    assert emulator.stats()["calls"]["retrieve"] >= 1


async def test_timeout_event_at_the_deadline(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 600
    batch_id = make_batch(2)
    deadline = pendulum.now("UTC").add(seconds=0.4).to_iso8601_string()
    [event] = await events_of(BatchEndedTrigger(batch_id=batch_id, poll_interval=0.1, deadline=deadline))
    assert event["status"] == "timeout"
    assert event["batch"]["processing_status"] == "in_progress"
    assert "had not ended by the deadline" in event["message"]


@pytest.mark.smoke
async def test_wrong_key_fails_fast_without_a_retry_loop(
    emulator: EmulatorHandle, anthropix_conn_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = make_batch(1)
    monkeypatch.setenv(
        "AIRFLOW_CONN_WRONG_KEY",
        json.dumps({"conn_type": "anthropix", "password": "sk-wrong-secret", "host": emulator.url}),
    )
    before = emulator.stats()["calls"].get("retrieve", 0)
    [event] = await events_of(BatchEndedTrigger(batch_id=batch_id, anthropix_conn_id="wrong_key", poll_interval=30))
    assert event["status"] == "error"
    assert "401" in event["message"]
    assert "sk-wrong-secret" not in json.dumps(event)
    assert emulator.stats()["calls"].get("retrieve", 0) - before <= 1


async def test_unknown_batch_is_an_error_not_a_wait(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    [event] = await events_of(BatchEndedTrigger(batch_id="msgbatch_nope", poll_interval=30))
    assert event["status"] == "error"
    assert "404" in event["message"]
    assert event["batch"] == {"id": "msgbatch_nope"}


async def test_missing_connection_is_an_error_event(emulator: EmulatorHandle) -> None:
    [event] = await events_of(BatchEndedTrigger(batch_id="msgbatch_x", anthropix_conn_id="not_defined_anywhere"))
    assert event["status"] == "error"
    assert "not_defined_anywhere" in event["message"]


async def test_transient_failures_are_waited_out_following_retry_after(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_conn(monkeypatch, "anthropix_default", emulator, extra={"max_retries": 0})
    batch_id = make_batch(2)
    emulator.add_fault("status", endpoint="retrieve", status=529, count=2)
    emulator.add_fault("status", endpoint="retrieve", status=429, count=1, retry_after=0.05)
    trigger = BatchEndedTrigger(batch_id=batch_id, poll_interval=0.2, max_poll_failures=5)
    [event] = await events_of(trigger)
    assert event["status"] == "success"
    assert emulator.stats()["faults_fired"] == 3
    assert "failure 3 of 5 tolerated" in capsys.readouterr().out


async def test_failure_budget_ends_the_wait_with_an_error(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, "anthropix_default", emulator, extra={"max_retries": 0})
    batch_id = make_batch(1)
    emulator.add_fault("status", endpoint="retrieve", status=503, count=None)
    [event] = await events_of(BatchEndedTrigger(batch_id=batch_id, poll_interval=0.01, max_poll_failures=2))
    assert event["status"] == "error"
    assert "failed 3 times in a row" in event["message"]


async def test_progress_is_logged_with_counts(
    emulator: EmulatorHandle, anthropix_conn_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator.config.processing_seconds = 3.0  # long enough for several polls while in progress, even on a busy box
    batch_id = make_batch(20)
    [event] = await events_of(BatchEndedTrigger(batch_id=batch_id, poll_interval=0.1, progress_log_interval=0.3))
    assert event["status"] == "success"
    out = capsys.readouterr().out
    # The first poll may land after the first requests finished (a busy machine): match the shape.
    assert re.search(rf"batch {batch_id} in_progress: \d+/20 done \(\d+%\)", out), out
    assert "eta ~" in out


async def test_many_triggers_on_one_loop_share_one_client(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    ids = [make_batch(1, prompt=f"p{i}") for i in range(5)]
    triggers = [BatchEndedTrigger(batch_id=ids[i % 5], poll_interval=0.05) for i in range(100)]
    results = await asyncio.gather(*(events_of(t) for t in triggers))
    assert all(len(r) == 1 and r[0]["status"] == "success" for r in results)
    first = await AnthropixHook.aget_async_client()
    assert first is await AnthropixHook.aget_async_client()


async def test_retry_after_is_honoured_over_the_poll_interval(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, "anthropix_default", emulator, extra={"max_retries": 0})
    batch_id = make_batch(1)
    emulator.advance(5)  # the batch has ended: the first successful poll finishes the wait
    emulator.add_fault("status", endpoint="retrieve", status=429, count=1, retry_after=0.05)
    # With a 10-minute interval the wait ends in time only if the 429's retry-after is followed.
    [event] = await events_of(BatchEndedTrigger(batch_id=batch_id, poll_interval=600), limit=10)
    assert event["status"] == "success"


async def test_first_poll_waits_for_first_poll_delay(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    """The deferring task has just polled: the trigger's first poll comes one delay later, not at once."""
    batch_id = make_batch(1)
    emulator.advance(60)  # the batch has ended: an immediate poll would fire at once
    trigger = BatchEndedTrigger(batch_id=batch_id, poll_interval=0.05, first_poll_delay=0.6, jitter=0.0)
    task = asyncio.ensure_future(events_of(trigger))
    await asyncio.sleep(0.3)
    assert emulator.stats()["calls"].get("retrieve", 0) == 0
    assert not task.done()
    [event] = await task
    assert event["status"] == "success"
    assert emulator.stats()["calls"]["retrieve"] == 1

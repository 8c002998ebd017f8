"""BatchesEndedTrigger.run() against the emulator: one trigger for all batches of a job in flight."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pendulum
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.triggers.job import BatchesEndedTrigger
from airflow_provider_anthropix.workflow.events import EventError, parse_batches_event

KEY = "sk-ant-emulator-test-key"


def make_batch(n: int, tag: str) -> str:
    requests = [
        {
            "custom_id": f"{tag}-{i}",
            "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": f"hello {i}"}]},
        }
        for i in range(n)
    ]
    return AnthropixHook().create_batch(requests).id


async def events_of(trigger: BatchesEndedTrigger, limit: float = 20.0) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return await asyncio.wait_for(collect(), limit)


def rebuilt(trigger: BatchesEndedTrigger) -> BatchesEndedTrigger:
    """The trigger as the triggerer rebuilds it from its serialized form."""
    _classpath, kwargs = trigger.serialize()
    assert KEY not in json.dumps(kwargs)
    return BatchesEndedTrigger(**kwargs)


@pytest.mark.smoke
async def test_all_waits_until_every_batch_has_ended(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    ids = [make_batch(2, f"a{i}") for i in range(3)]
    events = await events_of(rebuilt(BatchesEndedTrigger(batch_ids=ids, wait_for="all", poll_interval=0.05)))
    assert len(events) == 1
    status, ended, message = parse_batches_event(events[0])
    assert status == "success" and sorted(ended) == sorted(ids)
    assert events[0]["ended"][ids[0]]["succeeded"] == 2
    assert "3/3 batches ended" in message
    assert KEY not in json.dumps(events[0])


async def test_any_ends_the_wait_at_the_first_batch_that_ends(
    emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    emulator.config.processing_seconds = 0.1
    quick = make_batch(1, "quick")
    emulator.config.processing_seconds = 60.0
    slow = make_batch(1, "slow")
    events = await events_of(BatchesEndedTrigger(batch_ids=[slow, quick], wait_for="any", poll_interval=0.05))
    assert list(events[0]["ended"]) == [quick]


def rounds_of(times: list[float], gap: float) -> list[list[float]]:
    """Arrival times grouped into polling rounds: a pause longer than ``gap`` starts a new round."""
    rounds: list[list[float]] = []
    for arrived in times:
        if rounds and arrived - rounds[-1][-1] <= gap:
            rounds[-1].append(arrived)
        else:
            rounds.append([arrived])
    return rounds


async def test_one_trigger_polls_each_batch_once_per_interval(
    emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    """Exactly one GET per pending batch per interval: a round of 10 calls every 0.2 s, no more, no sooner.

    Counted per round from the emulator's arrival times rather than over a wall-clock window,
    so the figure is exact: a trigger that polled each batch twice a round, or every half
    interval, or only some batches, fails it, however loaded the machine is.
    """
    interval, batches = 0.2, 10
    emulator.config.processing_seconds = 60.0
    ids = [make_batch(1, f"p{i}") for i in range(batches)]
    started = time.monotonic()
    trigger = BatchesEndedTrigger(batch_ids=ids, poll_interval=interval, jitter=0.0, deadline=None)
    task = asyncio.ensure_future(events_of(trigger))
    await asyncio.sleep(5.5 * interval)  # rounds at 0, 0.2, ... 1.0 s: six, the last possibly cut by the cancel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    times = [t for t in emulator.call_times("retrieve") if t >= started]
    rounds = rounds_of(times, gap=interval / 2)
    assert 4 <= len(rounds) <= 6, [len(r) for r in rounds]  # it polled again and again, not faster
    assert [len(r) for r in rounds[:-1]] == [batches] * (len(rounds) - 1)  # every batch once a round
    assert 1 <= len(rounds[-1]) <= batches
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(rounds)]
    assert min(gaps) >= interval * 0.9, gaps  # a round no sooner than one interval after the last


async def test_deadline_gives_a_timeout_event(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 60.0
    ids = [make_batch(1, "late")]
    deadline = pendulum.now("UTC").add(seconds=1).to_iso8601_string()
    events = await events_of(BatchesEndedTrigger(batch_ids=ids, poll_interval=0.1, deadline=deadline))
    assert events[0]["status"] == "timeout"
    assert "deadline" in events[0]["message"]


async def test_a_batch_that_is_not_found_ends_the_wait_with_an_error(
    emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    ok = make_batch(1, "ok")
    emulator.config.processing_seconds = 60.0
    events = await events_of(BatchesEndedTrigger(batch_ids=[ok, "msgbatch_missing"], poll_interval=0.05))
    assert events[0]["status"] == "error"
    assert "msgbatch_missing" in events[0]["message"]


def test_malformed_events_are_refused() -> None:
    for event in (None, {"status": "odd", "ended": {}}, {"status": "success"}, {"status": "success", "ended": {}}):
        with pytest.raises(EventError):
            parse_batches_event(event)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="wait_for"):
        BatchesEndedTrigger(batch_ids=["x"], wait_for="some")
    with pytest.raises(ValueError, match="empty"):
        BatchesEndedTrigger(batch_ids=[])

"""BatchEndedSensor with the sync client (poke mode) and its decisions, called directly against the emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor
from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger


def make_batch(texts: list[str]) -> str:
    requests = [
        {"custom_id": f"r-{i}", "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": t}]}}
        for i, t in enumerate(texts)
    ]
    return AnthropixHook().create_batch(requests).id


def run(sensor: BatchEndedSensor) -> Any:
    return sensor.execute({})  # type: ignore[arg-type]


@pytest.mark.smoke
def test_poke_mode_waits_and_returns_the_summary(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    batch_id = make_batch(["a", "b", "c"])
    summary = run(BatchEndedSensor(task_id="s", batch_id=batch_id, mode="poke", poll_interval=0.1, deferrable=False))
    assert summary["batch_id"] == batch_id
    assert summary["request_counts"]["succeeded"] == 3
    assert summary["ended_at"] is not None
    assert emulator.stats()["calls"]["retrieve"] >= 2  # it really waited


def test_poke_timeout_with_cancel_cancels_then_fails(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 600
    batch_id = make_batch(["a"])
    sensor = BatchEndedSensor(
        task_id="s", batch_id=batch_id, poll_interval=0.1, timeout=0.3, on_timeout="cancel", deferrable=False
    )
    with pytest.raises(AirflowSensorTimeout):
        run(sensor)
    assert AnthropixHook().get_batch(batch_id).cancel_initiated_at is not None


def test_poke_timeout_with_fail_leaves_the_batch_alone(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 600
    batch_id = make_batch(["a"])
    with pytest.raises(AirflowSensorTimeout):
        run(BatchEndedSensor(task_id="s", batch_id=batch_id, poll_interval=0.1, timeout=0.3, deferrable=False))
    assert "cancel" not in emulator.stats()["calls"]


def test_forced_errors_and_cancellations_meet_the_policy(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 0
    batch_id = make_batch(["ok", "ok", "[[emulator:errored]]", "[[emulator:canceled]]"])
    with pytest.raises(AirflowFailException, match=r"errored ratio 25\.0% is above max_errored_ratio 10\.0%"):
        run(BatchEndedSensor(task_id="s", batch_id=batch_id, poll_interval=0.1, max_errored_ratio=0.1))
    with pytest.raises(AirflowFailException, match="1 requests were canceled and fail_on_canceled is set"):
        run(BatchEndedSensor(task_id="s", batch_id=batch_id, poll_interval=0.1, fail_on_canceled=True))
    summary = run(BatchEndedSensor(task_id="s", batch_id=batch_id, poll_interval=0.1, max_errored_ratio=0.25))
    assert summary["request_counts"] == {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 1, "expired": 0}


@pytest.mark.smoke
def test_deferrable_defers_with_a_serializable_trigger(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 600
    batch_id = make_batch(["a"])
    sensor = BatchEndedSensor(task_id="s", batch_id=batch_id, deferrable=True, poll_interval=30, timeout=3600)
    with pytest.raises(TaskDeferred) as info:
        run(sensor)
    trigger = info.value.trigger
    assert isinstance(trigger, BatchEndedTrigger)
    _classpath, kwargs = trigger.serialize()
    assert kwargs["batch_id"] == batch_id
    assert kwargs["poll_interval"] == 30
    assert kwargs["deadline"]
    assert "sk-ant" not in json.dumps(kwargs)
    assert info.value.method_name == "execute_complete"
    assert info.value.timeout is not None and info.value.timeout.total_seconds() > 3600


def test_already_ended_batch_does_not_defer(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 0
    batch_id = make_batch(["a"])
    summary = run(BatchEndedSensor(task_id="s", batch_id=batch_id, deferrable=True))
    assert summary["processing_status"] == "ended"


def test_execute_complete_raises_on_error_and_timeout_events(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 600
    batch_id = make_batch(["a"])
    sensor = BatchEndedSensor(task_id="s", batch_id=batch_id, on_timeout="cancel")
    with pytest.raises(Exception, match="HTTP 404"):
        sensor.execute_complete({}, {"status": "error", "batch": {"id": batch_id}, "message": "HTTP 404 not found"})  # type: ignore[arg-type]
    assert "cancel" not in emulator.stats()["calls"]
    with pytest.raises(AirflowSensorTimeout, match="had not ended"):
        sensor.execute_complete({}, {"status": "timeout", "batch": {"id": batch_id}, "message": "had not ended"})  # type: ignore[arg-type]
    assert emulator.stats()["calls"]["cancel"] == 1


def test_wrong_key_fails_at_once(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "anthropix", "password": "sk-wrong-secret", "host": emulator.url}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", json.dumps(conn))
    with pytest.raises(AirflowFailException, match="Check the API key") as info:
        run(BatchEndedSensor(task_id="s", batch_id="msgbatch_x", poll_interval=0.1, deferrable=False))
    assert "sk-wrong-secret" not in str(info.value)
    assert emulator.stats()["rejected"]["retrieve"] == 1

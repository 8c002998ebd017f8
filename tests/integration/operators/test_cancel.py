"""CancelBatchOperator against the emulator, called directly."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.operators.cancel import CancelBatchOperator
from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger


def make_batch(n: int = 2) -> str:
    requests = [
        {
            "custom_id": f"r-{i}",
            "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "q"}]},
        }
        for i in range(n)
    ]
    return AnthropixHook().create_batch(requests).id


def run(op: CancelBatchOperator) -> Any:
    return op.execute({})  # type: ignore[arg-type]


@pytest.mark.smoke
def test_cancel_a_running_batch(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 600
    batch_id = make_batch()
    summary = run(CancelBatchOperator(task_id="c", batch_id=batch_id))
    assert summary["processing_status"] == "canceling"
    assert emulator.stats()["calls"]["cancel"] == 1


def test_cancel_and_wait_in_the_worker(
    emulator: EmulatorHandle, anthropix_conn_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator.config.processing_seconds = 600
    emulator.config.cancel_seconds = 0.3
    batch_id = make_batch(3)
    summary = run(CancelBatchOperator(task_id="c", batch_id=batch_id, wait_for_end=True, poll_interval=0.1))
    assert summary["processing_status"] == "ended"
    assert summary["request_counts"]["canceled"] == 3
    # The log says how many were canceled, not only how many are "done".
    assert f"batch {batch_id} ended: 0 succeeded, 0 errored, 3 canceled, 0 expired, 0 processing of 3" in (
        capsys.readouterr().out
    )


def test_cancel_and_wait_defers_to_the_trigger(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 600
    batch_id = make_batch()
    op = CancelBatchOperator(task_id="c", batch_id=batch_id, wait_for_end=True, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        run(op)
    assert isinstance(info.value.trigger, BatchEndedTrigger)
    assert info.value.trigger.batch_id == batch_id


def test_already_ended_is_logged_not_an_error(
    emulator: EmulatorHandle, anthropix_conn_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator.config.processing_seconds = 0
    batch_id = make_batch()
    summary = run(CancelBatchOperator(task_id="c", batch_id=batch_id, wait_for_end=True))
    assert summary["processing_status"] == "ended"
    assert summary["request_counts"]["succeeded"] == 2
    assert f"Batch {batch_id} had already ended" in capsys.readouterr().out


def test_unknown_batch_fails_clearly(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    with pytest.raises(AirflowFailException, match="canceling batch msgbatch_missing failed: not found"):
        run(CancelBatchOperator(task_id="c", batch_id="msgbatch_missing"))

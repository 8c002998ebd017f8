"""Land, then gate: the fetch publishes every result, then applies the outcome policy.

A batch whose errors are over the limit must leave its results (errored lines included)
and the manifest in the destination, and then fail the task without retries, with a
message that counts the errors by type. The emulator makes the errors
(``[[emulator:errored:TYPE]]`` markers), so the types come from real result lines.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_anthropix.api import MessageBatch
from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.io import MANIFEST_NAME
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator

#: 20 requests: 4 invalid_request_error, 2 overloaded_error, 1 canceled, 13 succeeded.
MARKERS = ["[[emulator:errored:invalid_request_error]]"] * 4 + ["[[emulator:errored:overloaded_error]]"] * 2
MARKERS += ["[[emulator:canceled]]"] + [""] * 13


@pytest.fixture
def batch(emulator: EmulatorHandle, anthropix_conn_env: str) -> MessageBatch:
    hook = AnthropixHook(anthropix_conn_env)
    params = {"model": "claude-haiku-4-5", "max_tokens": 16}
    created = hook.create_batch(
        [
            {"custom_id": f"g-{i:02d}", "params": {**params, "messages": [{"role": "user", "content": f"q {i} {m}"}]}}
            for i, m in enumerate(MARKERS)
        ]
    )
    emulator.advance(3600)
    deadline = time.monotonic() + 30
    while not created.is_ended:
        assert time.monotonic() < deadline, "the batch did not end"
        time.sleep(0.05)
        created = hook.get_batch(created.id)
    assert created.request_counts.errored == 6 and created.request_counts.canceled == 1
    return created


def fetch(batch: MessageBatch, dest: Path, **kwargs: Any) -> dict[str, Any]:
    operator = FetchBatchResultsOperator(task_id="fetch", batch_id=batch.id, destination=f"file://{dest}", **kwargs)
    result: dict[str, Any] = operator.execute({})  # type: ignore[arg-type]
    return result


def test_over_the_ratio_the_results_land_and_then_the_task_fails_naming_error_types(
    tmp_path: Path, batch: MessageBatch
) -> None:
    dest = tmp_path / "run"
    with pytest.raises(AirflowFailException) as info:
        fetch(batch, dest, max_errored_ratio=0.1)
    message = str(info.value)
    assert "errored ratio 30.0% is above max_errored_ratio 10.0%" in message
    assert "errored by type: invalid_request_error: 4, overloaded_error: 2" in message
    assert f"file://{dest}/{MANIFEST_NAME}" in message
    # Landed before the gate: the results, errored lines included, and the manifest.
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    assert manifest["complete"] is True
    assert manifest["errored_by_type"] == {"invalid_request_error": 4, "overloaded_error": 2}
    lines = [json.loads(line) for line in (dest / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 20
    errored = sorted(line["result"]["error"]["error"]["type"] for line in lines if line["result"]["type"] == "errored")
    assert errored == ["invalid_request_error"] * 4 + ["overloaded_error"] * 2


def test_canceled_and_expired_gates_apply_after_publishing(tmp_path: Path, batch: MessageBatch) -> None:
    with pytest.raises(AirflowFailException, match="1 requests were canceled and fail_on_canceled is set"):
        fetch(batch, tmp_path / "a", fail_on_canceled=True)
    assert (tmp_path / "a" / MANIFEST_NAME).exists()
    assert fetch(batch, tmp_path / "b", fail_on_expired=True)["counts"]["errored"] == 6  # none expired


def test_without_a_policy_or_under_the_ratio_the_fetch_succeeds(tmp_path: Path, batch: MessageBatch) -> None:
    assert fetch(batch, tmp_path / "a")["counts"]["errored"] == 6
    assert fetch(batch, tmp_path / "b", max_errored_ratio=0.3)["complete"] is True


def test_a_bad_ratio_fails_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="max_errored_ratio must be between 0 and 1"):
        FetchBatchResultsOperator(task_id="f", batch_id="b", destination="/x", max_errored_ratio=10)

"""The chaos DAG of the deployment test: the real operators, plus precise process deaths on demand.

Same shape as the example DAG (requests file -> CreateBatchOperator -> deferred
BatchEndedSensor -> FetchBatchResultsOperator), with short retry delays so that a
scenario that kills a task does not wait minutes for the retry.

The ``crash`` param makes the *first try* of a task SIGKILL its own process at an exact
point, which is what an OOM kill or a lost VM does, minus the timing luck an external
``kill -9`` would need to land in a window of microseconds:

- ``after_create``: the create call returned a batch, nothing recorded it yet (the retry
  must find the batch by listing, not create a second one);
- ``after_record``: the batch id is in the task state store (the retry must reuse it);
- ``mid_fetch``: the first part of the results is staged, the rest not downloaded (nothing
  may be published; the retry must publish complete results).

Each death is announced in the task log with the marker ``E2E-CHAOS-SIGKILL``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from datetime import timedelta
from functools import cached_property
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_anthropix.api import MessageBatch
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.operators.create import STATE_BATCH_ID, CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor

CRASHES = ("", "after_create", "after_record", "mid_fetch")
RUN_FOLDER = "{{ params.output.rstrip('/') }}/{{ run_id | replace(':', '_') | replace('+', '_') }}"


def die(where: str) -> None:
    """SIGKILL this task process after saying so in the task log."""
    print(f"E2E-CHAOS-SIGKILL {where}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class ChaosHook(AnthropixHook):
    """The real hook; dies right after ``create_batch`` returns or after the first results chunk is used."""

    crash = ""

    def create_batch(self, requests: Any) -> MessageBatch:
        batch = super().create_batch(requests)
        if self.crash == "after_create":
            die(f"after_create: the API returned batch {batch.id}; nothing has recorded it")
        return batch

    def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        delivered = 0
        for chunk in super().iter_result_bytes(batch, chunk_size=chunk_size):
            yield chunk
            # Control is back here: the export has taken (and staged) the chunk.
            delivered += len(chunk)
            if self.crash == "mid_fetch":
                die(f"mid_fetch: {delivered} bytes of results staged, the rest not downloaded")


class _KillAfterSet:
    """Wraps the task state store: dies once ``key`` has been written."""

    def __init__(self, store: Any, key: str) -> None:
        self._store = store
        self._key = key

    def get(self, key: str) -> Any:
        return self._store.get(key)

    def set(self, key: str, value: Any) -> None:
        self._store.set(key, value)
        if key == self._key:
            die(f"after_record: batch {value} recorded in the task state store")

    def delete(self, key: str) -> None:
        self._store.delete(key)


def _crash_for(context: Any) -> str:
    crash = str(context["params"].get("crash") or "")
    return crash if context["ti"].try_number == 1 else ""


class ChaosCreateBatchOperator(CreateBatchOperator):
    @cached_property
    def hook(self) -> ChaosHook:
        return ChaosHook(anthropix_conn_id=self.anthropix_conn_id)

    def execute(self, context: Any) -> str:
        crash = _crash_for(context)
        self.hook.crash = crash
        if crash == "after_record" and context.get("task_state_store") is not None:
            context["task_state_store"] = _KillAfterSet(context["task_state_store"], STATE_BATCH_ID)
        return super().execute(context)


class ChaosFetchBatchResultsOperator(FetchBatchResultsOperator):
    @cached_property
    def hook(self) -> ChaosHook:
        return ChaosHook(anthropix_conn_id=self.anthropix_conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        crash = _crash_for(context)
        self.hook.crash = crash if crash == "mid_fetch" else ""
        return super().execute(context)


with DAG(
    dag_id="anthropix_e2e_chaos",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=2)},
    params={
        "output": Param("file:///tmp/anthropix-e2e-chaos", type="string"),
        "requests": Param(200, type="integer"),
        "crash": Param("", enum=list(CRASHES)),
    },
    tags=["e2e"],
) as dag:

    @task
    def build_requests(run_folder: str, count: str) -> str:
        target = ObjectStoragePath(run_folder) / "requests.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for i in range(int(count)):
                request = {
                    "custom_id": f"chaos-{i:05d}",
                    "params": {"messages": [{"role": "user", "content": f"Say something about item {i}."}]},
                }
                out.write(json.dumps(request).encode() + b"\n")
        return str(target)

    create = ChaosCreateBatchOperator(
        task_id="create_batch",
        requests_path=build_requests(RUN_FOLDER, "{{ params.requests }}"),
        default_params={"model": "claude-haiku-4-5", "max_tokens": 100},
        lost_response_check_interval=1.0,
    )
    wait = BatchEndedSensor(
        task_id="wait_for_batch",
        batch_id=create.output,
        deferrable=True,
        poll_interval=2.0,
        max_poll_failures=10,
    )
    fetch = ChaosFetchBatchResultsOperator(
        task_id="fetch_results",
        batch_id=create.output,
        destination=RUN_FOLDER + "/results",
        # Long enough for the harness to look at the folder between a killed try and the retry.
        retry_delay=timedelta(seconds=8),
    )
    wait >> fetch

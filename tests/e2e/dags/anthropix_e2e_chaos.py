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
  may be published; the retry must publish complete results);
- ``hold_after_record``: like ``after_record``, but the task logs ``E2E-CHAOS-HOLD`` and waits
  there to be killed from outside (the cluster run SIGKILLs the Celery worker running it).

Each death is announced in the task log with the marker ``E2E-CHAOS-SIGKILL``.

The cluster run (``tests/e2e_cluster``) uses this DAG too, with results in S3 and these
settings from its environment (read when the file is parsed; the defaults are the e2e run's):
``ANTHROPIX_E2E_CHAOS_MAX_ACTIVE_RUNS`` (1) and ``..._MAX_ACTIVE_TASKS`` (16) for many runs at
once, ``..._RETRY_DELAY`` (2 s), ``..._MAX_POLL_FAILURES`` (10) of the sensor, and
``..._CHECK_DESTINATION`` (off; ``1``: the create checks that the results folder is writable).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
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

CRASHES = ("", "after_create", "after_record", "mid_fetch", "hold_after_record")
RUN_FOLDER = "{{ params.output.rstrip('/') }}/{{ run_id | replace(':', '_') | replace('+', '_') }}"
MAX_ACTIVE_RUNS = int(os.environ.get("ANTHROPIX_E2E_CHAOS_MAX_ACTIVE_RUNS", "1"))
MAX_ACTIVE_TASKS = int(os.environ.get("ANTHROPIX_E2E_CHAOS_MAX_ACTIVE_TASKS", "16"))  # Airflow's default
RETRY_DELAY = float(os.environ.get("ANTHROPIX_E2E_CHAOS_RETRY_DELAY", "2"))
MAX_POLL_FAILURES = int(os.environ.get("ANTHROPIX_E2E_CHAOS_MAX_POLL_FAILURES", "10"))
CHECK_DESTINATION = os.environ.get("ANTHROPIX_E2E_CHAOS_CHECK_DESTINATION", "") == "1"


def die(where: str) -> None:
    """SIGKILL this task process after saying so in the task log."""
    print(f"E2E-CHAOS-SIGKILL {where}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def hold(where: str) -> None:
    """Say so in the task log, then wait to be killed from outside."""
    print(f"E2E-CHAOS-HOLD {where}; waiting to be killed", flush=True)
    time.sleep(600)


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


class _StopAfterSet:
    """Wraps the task state store: dies (``after_record``) or holds once ``key`` has been written."""

    def __init__(self, store: Any, key: str, crash: str) -> None:
        self._store = store
        self._key = key
        self._crash = crash

    def get(self, key: str) -> Any:
        return self._store.get(key)

    def set(self, key: str, value: Any) -> None:
        self._store.set(key, value)
        if key == self._key:
            (die if self._crash == "after_record" else hold)(
                f"{self._crash}: batch {value} recorded in the task state store"
            )

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
        if crash in ("after_record", "hold_after_record") and context.get("task_state_store") is not None:
            context["task_state_store"] = _StopAfterSet(context["task_state_store"], STATE_BATCH_ID, crash)
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
    max_active_runs=MAX_ACTIVE_RUNS,
    max_active_tasks=MAX_ACTIVE_TASKS,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=RETRY_DELAY)},
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
        if target.protocol in ("", "file"):  # an object store has no folders to make
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
        results_destination=RUN_FOLDER + "/results" if CHECK_DESTINATION else None,
        lost_response_check_interval=1.0,
    )
    wait = BatchEndedSensor(
        task_id="wait_for_batch",
        batch_id=create.output,
        deferrable=True,
        poll_interval=2.0,
        max_poll_failures=MAX_POLL_FAILURES,
    )
    fetch = ChaosFetchBatchResultsOperator(
        task_id="fetch_results",
        batch_id=create.output,
        destination=RUN_FOLDER + "/results",
        # Long enough for the harness to look at the folder between a killed try and the retry.
        retry_delay=timedelta(seconds=max(8, RETRY_DELAY)),
    )
    wait >> fetch

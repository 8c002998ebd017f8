"""The cluster test's DAG: requests in S3 -> create -> deferred wait -> fetch to S3.

The shape of the example DAG with short retry delays and many active runs at once (the
example's ``max_active_runs=1`` would queue concurrent runs one behind the other). The
``hold`` param makes the *first try* of ``create_batch`` stop right after the batch id
reached the task state store and log ``E2E-CLUSTER-HOLD``: the harness then SIGKILLs the
Celery worker running it, and the retry, on the other worker, must reuse the batch from the
state store in PostgreSQL instead of creating a second one.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_anthropix.operators.create import STATE_BATCH_ID, CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor

RUN_FOLDER = "{{ params.output.rstrip('/') }}/{{ run_id | replace(':', '_') | replace('+', '_') }}"
HOLD_MARKER = "E2E-CLUSTER-HOLD"


class _HoldAfterSet:
    """Wraps the task state store: once ``key`` is written, log the marker and wait to be killed."""

    def __init__(self, store: Any, key: str) -> None:
        self._store = store
        self._key = key

    def get(self, key: str) -> Any:
        return self._store.get(key)

    def set(self, key: str, value: Any) -> None:
        self._store.set(key, value)
        if key == self._key:
            print(f"{HOLD_MARKER} batch {value} recorded in the task state store; waiting to be killed", flush=True)
            time.sleep(600)

    def delete(self, key: str) -> None:
        self._store.delete(key)


class HoldingCreateBatchOperator(CreateBatchOperator):
    def execute(self, context: Any) -> str:
        hold = str(context["params"].get("hold") or "") == "after_record" and context["ti"].try_number == 1
        if hold and context.get("task_state_store") is not None:
            context["task_state_store"] = _HoldAfterSet(context["task_state_store"], STATE_BATCH_ID)
        return super().execute(context)


with DAG(
    dag_id="anthropix_cluster",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=16,
    max_active_tasks=64,
    # A broker outage while a task is being queued fails that try at once (the Celery executor
    # retries a publish only on a timeout): the retry delay is what bridges the outage.
    default_args={"retries": 3, "retry_delay": timedelta(seconds=10)},
    params={
        "output": Param("s3://anthropix-cluster/cluster", type="string"),
        "requests": Param(200, type="integer"),
        "hold": Param("", enum=["", "after_record"]),
    },
    tags=["e2e"],
) as dag:

    @task
    def build_requests(run_folder: str, count: str) -> str:
        target = ObjectStoragePath(run_folder) / "requests.jsonl"
        with target.open("wb") as out:
            for i in range(int(count)):
                request = {
                    "custom_id": f"cluster-{i:05d}",
                    "params": {"messages": [{"role": "user", "content": f"Say something about item {i}."}]},
                }
                out.write(json.dumps(request).encode() + b"\n")
        return str(target)

    create = HoldingCreateBatchOperator(
        task_id="create_batch",
        requests_path=build_requests(RUN_FOLDER, "{{ params.requests }}"),
        default_params={"model": "claude-haiku-4-5", "max_tokens": 100},
        results_destination=RUN_FOLDER + "/results",
        lost_response_check_interval=1.0,
    )
    wait = BatchEndedSensor(
        task_id="wait_for_batch",
        batch_id=create.output,
        deferrable=True,
        poll_interval=2.0,
        max_poll_failures=30,
    )
    fetch = FetchBatchResultsOperator(
        task_id="fetch_results",
        batch_id=create.output,
        destination=RUN_FOLDER + "/results",
    )
    wait >> fetch

"""The batch-job chaos DAG: the real BatchJobOperator, whose first try dies at an exact point.

``crash`` (a DAG param) makes the first try SIGKILL its own process:

- ``after_second_create``: the API returned the job's second batch, the journal has not
  recorded it (the retry must adopt that batch, not create a third one);
- ``mid_export``: part of the merged results is staged, nothing published (the retry must
  export again from the same batches).

The death is announced in the task log with the marker ``E2E-CHAOS-SIGKILL``.
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
from airflow_provider_anthropix.operators.job import BatchJobOperator

CRASHES = ("", "after_second_create", "mid_export")
RUN_FOLDER = "{{ params.output.rstrip('/') }}/{{ run_id | replace(':', '_') | replace('+', '_') }}"


def die(where: str) -> None:
    print(f"E2E-CHAOS-SIGKILL {where}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class ChaosHook(AnthropixHook):
    crash = ""
    creates = 0

    def create_batch(self, requests: Any) -> MessageBatch:
        batch = super().create_batch(requests)
        self.creates += 1
        if self.crash == "after_second_create" and self.creates == 2:
            die(f"after_second_create: the API returned batch {batch.id}; the journal has not recorded it")
        return batch

    def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        for chunk in super().iter_result_bytes(batch, chunk_size=chunk_size):
            yield chunk
            if self.crash == "mid_export":
                die(f"mid_export: {len(chunk)} bytes of merged results staged, nothing published")


class ChaosBatchJobOperator(BatchJobOperator):
    @cached_property
    def hook(self) -> ChaosHook:
        return ChaosHook(anthropix_conn_id=self.anthropix_conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        self._arm(context)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self._arm(context)
        return super().execute_complete(context, event)

    def _arm(self, context: Any) -> None:
        crash = str(context["params"].get("crash") or "")
        # Only the first try dies; after a deferral the try number is unchanged, so it still counts as the first.
        self.hook.crash = crash if context["ti"].try_number == 1 else ""


with DAG(
    dag_id="anthropix_e2e_job_chaos",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=2)},
    params={
        "output": Param("file:///tmp/anthropix-e2e-job-chaos", type="string"),
        "requests": Param(250, type="integer"),
        "crash": Param("", enum=list(CRASHES)),
    },
    tags=["e2e"],
) as dag:

    @task
    def build_requests(run_folder: str, count: str, crash: str) -> str:
        # The crash in the ids: the emulator counts sends per custom_id, and scenarios must not share ids.
        target = ObjectStoragePath(run_folder) / "requests.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for i in range(int(count)):
                request = {
                    "custom_id": f"jobchaos-{crash or 'none'}-{i:05d}",
                    "params": {"messages": [{"role": "user", "content": f"Say something about item {i}."}]},
                }
                out.write(json.dumps(request).encode() + b"\n")
        return str(target)

    ChaosBatchJobOperator(
        task_id="job",
        requests_path=build_requests(RUN_FOLDER, "{{ params.requests }}", "{{ params.crash }}"),
        destination=RUN_FOLDER + "/results",
        default_params={"model": "claude-haiku-4-5", "max_tokens": 100},
        max_requests_per_batch=100,  # equal shards: recovery must still tell them apart
        max_batches_in_flight=3,
        poll_interval=2.0,
        max_errored_ratio=None,
        lost_response_checks=3,
    )

"""The cluster load test: many small batches, one deferred wait per batch (a mapped sensor).

``create_batches`` creates ``params.batches`` batches of two requests each through the hook
and returns their ids; ``wait`` is a mapped, deferrable :class:`BatchEndedSensor`, so every
batch is one trigger in one of the triggerers; ``collect`` checks that every wait ended with
its own batch's summary.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor

with DAG(
    dag_id="anthropix_cluster_load",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=256,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=2)},
    params={"batches": Param(100, type="integer")},
    tags=["e2e"],
) as dag:

    @task
    def create_batches(count: str) -> list[str]:
        hook = AnthropixHook()
        ids = []
        for n in range(int(count)):
            batch = hook.create_batch(
                [
                    {
                        "custom_id": f"load-{n:03d}-{k}",
                        "params": {
                            "model": "claude-haiku-4-5",
                            "max_tokens": 50,
                            "messages": [{"role": "user", "content": f"Load test {n}/{k}."}],
                        },
                    }
                    for k in range(2)
                ]
            )
            ids.append(batch.id)
        print(f"Created {len(ids)} batches")
        return ids

    wait = BatchEndedSensor.partial(task_id="wait", deferrable=True, poll_interval=3.0, max_poll_failures=50).expand(
        batch_id=create_batches("{{ params.batches }}")
    )

    @task
    def collect(summaries: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [s["batch_id"] for s in summaries]
        if len(set(ids)) != len(ids):
            raise ValueError("two waits reported the same batch")
        bad = [s for s in summaries if s["request_counts"]["succeeded"] + s["request_counts"]["errored"] != 2]
        if bad:
            raise ValueError(f"waits with wrong counts: {bad[:3]}")
        return {"waits": len(summaries), "batch_ids": ids}

    collect(wait.output)

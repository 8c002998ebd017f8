"""Nightly batch: the day's prompts -> one Message Batch -> results in object storage -> a report.

``build_requests`` turns the shipped sample prompts (``data/prompts.jsonl``) into batch
requests and writes them next to the run's results, so every task reads its input from
object storage and none needs the disk of another. ``create_batch`` validates them, checks
that the results folder can be written (``results_destination``) and submits them
(crash-safe: a retry reuses the batch), ``wait_for_batch`` waits in the triggerer
(deferrable: no worker slot while the batch runs), ``fetch_results`` streams the results
into the output folder and ``report`` logs counts and the estimated cost.

Land, then gate: the sensor only waits (it does not fail on errored requests), the fetch
publishes every result, errored ones included, and only then applies the outcome policy
(more than 10% errored fails the run, with the errors counted by type). A failed night
still leaves the errored lines in the results folder for a person to read.

Settings (environment, read when the DAG is parsed, or the ``output`` DAG param per run):

- ``ANTHROPIX_NIGHTLY_OUTPUT``: output folder URI (``file:///...``, ``s3://bucket/prefix``);
  default ``out/nightly`` in the repository.
- ``ANTHROPIX_NIGHTLY_POLL_INTERVAL``: seconds between status polls (default 60).
- ``ANTHROPIX_NIGHTLY_MODEL``: model of every request (default ``claude-haiku-4-5``).
"""

from __future__ import annotations

import gzip
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor

PROMPTS = Path(__file__).resolve().parent / "data" / "prompts.jsonl"
DEFAULT_OUTPUT = (Path(__file__).resolve().parents[1] / "out" / "nightly").as_uri()
OUTPUT = os.environ.get("ANTHROPIX_NIGHTLY_OUTPUT") or DEFAULT_OUTPUT
POLL_INTERVAL = float(os.environ.get("ANTHROPIX_NIGHTLY_POLL_INTERVAL", "60"))
MODEL = os.environ.get("ANTHROPIX_NIGHTLY_MODEL", "claude-haiku-4-5")

#: One folder per run: requests.jsonl.gz, results/ (results + _manifest.json). Named after
#: ``run_after``, which every run has; ``ds``/``ts`` are undefined for runs triggered without a
#: logical date (the REST API's and ``airflow dags trigger``'s default).
RUN_FOLDER = "{{ params.output.rstrip('/') }}/{{ dag_run.run_after | ds_nodash }}/{{ dag_run.run_after | ts_nodash }}"

with DAG(
    dag_id="nightly_batch",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={"output": Param(OUTPUT, type="string", description="Folder URI for requests and results")},
    tags=["anthropix", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def build_requests(run_folder: str) -> str:
        """Write one batch request per prompt as gzipped JSONL; return its URI for create_batch."""
        target = ObjectStoragePath(run_folder) / "requests.jsonl.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        with PROMPTS.open("rb") as source, target.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as out:
            for line in source:
                if not line.strip():
                    continue
                prompt = json.loads(line)
                request = {
                    "custom_id": prompt["id"],
                    "params": {
                        "messages": [{"role": "user", "content": prompt["prompt"]}],
                        "metadata": {"user_id": f"nightly-{prompt['topic']}"},
                    },
                }
                out.write(json.dumps(request).encode() + b"\n")
                count += 1
        print(f"Wrote {count} requests to {target}")
        return str(target)

    requests_uri = build_requests(run_folder=RUN_FOLDER)

    create = CreateBatchOperator(
        task_id="create_batch",
        requests_path=requests_uri,
        default_params={
            "model": MODEL,
            "max_tokens": 300,
            "system": "You are a concise assistant for an online shop. Answer in at most three sentences.",
        },
        # Checked before anything is sent: a folder that cannot be written fails before the batch is paid for.
        results_destination=RUN_FOLDER + "/results",
    )

    wait = BatchEndedSensor(
        task_id="wait_for_batch",
        batch_id=create.output,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        # No outcome policy here: failing now would skip the fetch and lose the errored lines.
    )

    fetch = FetchBatchResultsOperator(
        task_id="fetch_results",
        batch_id=create.output,
        destination=RUN_FOLDER + "/results",
        compression="gzip",
        max_errored_ratio=0.10,  # applied after the results are published: land, then gate
        # The create's cost estimate, kept in the manifest beside the actual cost.
        estimate="{{ ti.xcom_pull(task_ids='create_batch', key='estimate') }}",
    )

    @task
    def report(summary: dict[str, Any], fetched: dict[str, Any]) -> dict[str, Any]:
        """Log what the night produced: counts, tokens, estimated cost and where the files are."""
        counts = summary["request_counts"]
        cost = float(fetched.get("estimated_cost_usd") or 0.0)
        print(
            f"Batch {summary['batch_id']} ended at {summary['ended_at']}: "
            f"{counts['succeeded']} succeeded, {counts['errored']} errored, "
            f"{counts['canceled']} canceled, {counts['expired']} expired of {summary['total']}"
        )
        print(f"Tokens: {fetched.get('tokens')}; estimated cost ${cost:.4f} (batch price)")
        print(f"Results: {fetched.get('destination')} (manifest {fetched.get('manifest')})")
        return {
            "batch_id": summary["batch_id"],
            "counts": counts,
            "estimated_cost_usd": cost,
            "manifest": fetched.get("manifest"),
        }

    wait >> fetch
    report(wait.output, fetch.output)

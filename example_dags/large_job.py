"""A job larger than one batch: generated prompts -> BatchJobOperator -> one merged result -> a report.

``generate_prompts`` writes the night's input into object storage as two JSONL files (a
folder is an input too). A few prompts carry emulator markers so that, against the local
emulator, some requests fail on their first attempt with a transient error
(``overloaded_error``) or expire: the job sends exactly those again in a retry round, and
the merged result has one answer per prompt. Against the real API the markers are just text.

``nightly_job`` splits the input into batches of ``ANTHROPIX_JOB_BATCH_SIZE`` requests,
creates them (at most ``max_batches_in_flight`` processing at once), waits for them in the
triggerer with one trigger, retries what failed transiently and publishes one
``results.jsonl`` with ``_manifest.json`` (every batch, its round and counts). ``report``
reads only the small XCom summary.

Settings (environment, read when the DAG is parsed, or the ``output`` DAG param per run):

- ``ANTHROPIX_JOB_OUTPUT``: output folder URI (default ``out/large_job`` in the repository);
- ``ANTHROPIX_JOB_REQUESTS``: how many prompts to generate (default 2,500);
- ``ANTHROPIX_JOB_BATCH_SIZE``: requests per batch (default 1,000, so the default input is 3 batches);
- ``ANTHROPIX_JOB_POLL_INTERVAL``: seconds between polls (default 60);
- ``ANTHROPIX_JOB_MODEL``: the model (default ``claude-haiku-4-5``);
- ``ANTHROPIX_JOB_SCHEDULE``: the schedule (default ``@daily``; empty for manual runs only).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_anthropix.operators.job import BatchJobOperator

DEFAULT_OUTPUT = (Path(__file__).resolve().parents[1] / "out" / "large_job").as_uri()
OUTPUT = os.environ.get("ANTHROPIX_JOB_OUTPUT") or DEFAULT_OUTPUT
REQUESTS = int(os.environ.get("ANTHROPIX_JOB_REQUESTS", "2500"))
BATCH_SIZE = int(os.environ.get("ANTHROPIX_JOB_BATCH_SIZE", "1000"))
POLL_INTERVAL = float(os.environ.get("ANTHROPIX_JOB_POLL_INTERVAL", "60"))
MODEL = os.environ.get("ANTHROPIX_JOB_MODEL", "claude-haiku-4-5")
SCHEDULE = os.environ.get("ANTHROPIX_JOB_SCHEDULE", "@daily") or None

#: One folder per run, named after run_after (every run has one; ds is undefined for runs without a logical date).
RUN_FOLDER = "{{ params.output.rstrip('/') }}/{{ dag_run.run_after | ds_nodash }}/{{ dag_run.run_after | ts_nodash }}"

#: Every 97th prompt is overloaded on its first attempt, every 251st expires on its first: both are retried.
TRANSIENT_EVERY = 97
EXPIRED_EVERY = 251

with DAG(
    dag_id="large_job",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={"output": Param(OUTPUT, type="string", description="Folder URI for prompts and results")},
    tags=["anthropix", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def generate_prompts(run_folder: str, count: int) -> str:
        """Write ``count`` prompts as two JSONL files under ``<run>/prompts/``; return the folder's URI."""
        folder = ObjectStoragePath(run_folder) / "prompts"
        folder.mkdir(parents=True, exist_ok=True)
        half = count // 2
        for part, numbers in (("part-0.jsonl", range(half)), ("part-1.jsonl", range(half, count))):
            with (folder / part).open("wb") as out:
                for n in numbers:
                    marker = ""
                    if n % TRANSIENT_EVERY == 5:
                        marker = " [[emulator:errored-once:overloaded_error]]"
                    elif n % EXPIRED_EVERY == 7:
                        marker = " [[emulator:expired-once]]"
                    request = {
                        "custom_id": f"item-{n:07d}",
                        "params": {
                            "messages": [{"role": "user", "content": f"Describe item {n} in one line.{marker}"}]
                        },
                    }
                    out.write(json.dumps(request).encode() + b"\n")
        print(f"Wrote {count:,} prompts to {folder}")
        return str(folder)

    prompts = generate_prompts(run_folder=RUN_FOLDER, count=REQUESTS)

    job = BatchJobOperator(
        task_id="nightly_job",
        requests_path=prompts,
        destination=RUN_FOLDER + "/results",
        default_params={"model": MODEL, "max_tokens": 200},
        max_requests_per_batch=BATCH_SIZE,
        max_batches_in_flight=10,
        retry_error_types=("api_error", "overloaded_error"),
        retry_expired=True,
        max_retry_rounds=2,
        max_errored_ratio=0.0,
        poll_interval=POLL_INTERVAL,
        deferrable=True,  # wait in the triggerer: no worker slot held while the batches run
    )

    @task
    def report(summary: dict[str, Any]) -> dict[str, Any]:
        """Log what the job produced; downstream tasks read the files listed in the manifest."""
        job_info = summary["job"]
        print(
            f"{summary['lines']:,} results in {job_info['batches']} batches over {job_info['rounds']} round(s): "
            f"{summary['counts']}"
        )
        for retry in job_info["retried"]:
            print(f"Round {retry['round']} sent {retry['requests']:,} again ({retry['reasons']}): {retry['outcome']}")
        print(f"Results: {summary['destination']} (manifest {summary['manifest']})")
        return {"manifest": summary["manifest"], "counts": summary["counts"]}

    report(job.output)

"""Table in, table out: yesterday's product reviews (Parquet) -> BatchTableOperator -> the same rows with typed answers.

``export_reviews`` stands in for the upstream task that lands the night's reviews as Parquet in
object storage. ``triage`` renders each row into a request with a one-line prompt, asks for a
``Triage`` answer (a Pydantic model, sent as structured output), runs them as one batch job and
publishes ``part-*.parquet`` + ``_manifest.json``: every review once, in order, with
``sentiment``, ``score``, ``topics`` and ``summary`` as typed columns and the ``_result_type``,
``_error``, tokens and cost of each row. ``top_topics`` reads the table back with pyarrow.

A few reviews carry emulator markers, so against the local emulator one answer is a refusal and
one breaks the schema on its first attempt (``retry_invalid_output`` sends it again in a retry
round). Against the real API the markers are just text.

Settings (environment, read when the DAG is parsed, or the ``output`` DAG param per run):

- ``ANTHROPIX_TABLE_OUTPUT``: output folder URI (default ``out/review_triage`` in the repository);
- ``ANTHROPIX_TABLE_ROWS``: how many reviews to generate (default 200);
- ``ANTHROPIX_TABLE_POLL_INTERVAL``: seconds between polls (default 60);
- ``ANTHROPIX_TABLE_MODEL``: the model (default ``claude-haiku-4-5``);
- ``ANTHROPIX_TABLE_SCHEDULE``: the schedule (default ``@daily``; empty for manual runs only).
"""

# No ``from __future__ import annotations`` here: Pydantic reads Triage's field types at class creation.
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, Param, task
from pydantic import BaseModel, Field

from airflow_provider_anthropix.operators.table import BatchTableOperator

DEFAULT_OUTPUT = (Path(__file__).resolve().parents[1] / "out" / "review_triage").as_uri()
OUTPUT = os.environ.get("ANTHROPIX_TABLE_OUTPUT") or DEFAULT_OUTPUT
ROWS = int(os.environ.get("ANTHROPIX_TABLE_ROWS", "200"))
POLL_INTERVAL = float(os.environ.get("ANTHROPIX_TABLE_POLL_INTERVAL", "60"))
MODEL = os.environ.get("ANTHROPIX_TABLE_MODEL", "claude-haiku-4-5")
SCHEDULE = os.environ.get("ANTHROPIX_TABLE_SCHEDULE", "@daily") or None
RUN_FOLDER = "{{ params.output.rstrip('/') }}/{{ dag_run.run_after | ds_nodash }}"


class Triage(BaseModel):
    """The answer asked for each review; its fields become the output's columns."""

    sentiment: Literal["positive", "neutral", "negative"]
    score: int = Field(ge=1, le=5, description="How satisfied the customer is, 1-5")
    topics: list[str] = Field(description="What the review is about, a few words each")
    summary: str


with DAG(
    dag_id="review_triage",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    params={"output": Param(OUTPUT, type="string", description="Folder URI for the reviews and the triage table")},
    tags=["anthropix", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def export_reviews(run_folder: str, count: int) -> str:
        """Write ``count`` reviews as Parquet (``review_id``, ``product``, ``text``); return the file's URI."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        products = ["kettle", "headphones", "desk lamp", "backpack", "coffee grinder"]
        moods = ["Works great, arrived early.", "Stopped working after a week.", "Does the job, nothing special."]
        texts = [f"{moods[n % 3]} The {products[n % 5]} is my {n}th order." for n in range(count)]
        texts[3] += " [[emulator:refusal]]"
        texts[7] += " [[emulator:schema-invalid-once]]"
        table = pa.table(
            {
                "review_id": [f"R-{n:06d}/{products[n % 5]}" for n in range(count)],  # not a valid custom_id: mapped
                "product": [products[n % 5] for n in range(count)],
                "text": texts,
            }
        )
        path = ObjectStoragePath(run_folder) / "reviews.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            pq.write_table(table, out)
        return str(path)

    reviews = export_reviews(run_folder=RUN_FOLDER, count=ROWS)

    triage = BatchTableOperator(
        task_id="triage",
        table_path=reviews,
        destination=RUN_FOLDER + "/triage",
        id_column="review_id",
        # Row templates: not Airflow template fields, so {{ text }} is the row's column here, while
        # task-level values (the run's date) come in through prompt_vars, which Airflow does render.
        prompt="Triage this review of our {{ product }}: {{ text }}",
        system="You triage customer reviews for the support team. Reviews received on {{ day }}.",
        prompt_vars={"day": "{{ dag_run.run_after | ds }}"},
        output_schema=Triage,
        retry_invalid_output=True,
        default_params={"model": MODEL, "max_tokens": 400},
        max_retry_rounds=1,
        max_errored_ratio=0.0,
        poll_interval=POLL_INTERVAL,
        deferrable=True,
    )

    @task
    def top_topics(summary: dict[str, Any]) -> dict[str, Any]:
        """Read the published table back (it is an ordinary Parquet dataset) and log what customers talk about."""
        import pyarrow.dataset as ds

        folder = ObjectStoragePath(summary["destination"])
        table = ds.dataset(str(folder.path), filesystem=folder.fs, format="parquet").to_table()
        ok = table.filter(ds.field("_result_type") == "succeeded")
        topics = Counter(t for row in ok.column("topics").to_pylist() for t in row)
        print(f"{table.num_rows:,} reviews, {ok.num_rows:,} triaged; outcomes: {summary['counts']}")
        print(f"Sentiment: {Counter(ok.column('sentiment').to_pylist())}; top topics: {topics.most_common(5)}")
        return {"rows": table.num_rows, "counts": summary["counts"]}

    top_topics(triage.output)

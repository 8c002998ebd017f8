"""Archive before expiry: every day, keep the results of every ended batch before the API drops them.

The API keeps a batch's results for 29 days after the batch was created. This DAG lists
every batch of the connection's key and exports each ended one whose results are not
archived yet to ``<destination>/<batch_id>/`` (``results.jsonl`` and ``_manifest.json``, the
export ``FetchBatchResultsOperator`` and ``anthropix batches results -o`` run). It is the
same code as ``anthropix batches archive`` (:func:`airflow_provider_anthropix.io.archive.archive_batches`),
so either can run it and the other sees what was done: a batch with a manifest of a complete
export of it is not downloaded again, and a daily run costs one list call and one small read
per batch when there is nothing new.

Batches whose results expire within 3 days are logged as warnings; those already gone are
listed in the task's return value. A batch that cannot be exported does not stop the
others; the task then fails naming it, and its retry exports only what is still missing.

The DAG is paused when first deployed (``is_paused_upon_creation=True``): unpause it to start.

Settings (environment, read when the DAG is parsed, or the DAG params per run):

- ``ANTHROPIX_ARCHIVE_DESTINATION``: archive folder URI (``file:///...``, ``s3://bucket/prefix``);
  default ``out/archive`` in the repository.
- ``ANTHROPIX_ARCHIVE_DESTINATION_CONN_ID``: Airflow connection of the store (e.g. an ``aws``
  one for ``s3://``); default none.
- ``ANTHROPIX_ARCHIVE_OLDER_THAN``: only batches created at least this long ago (``20d``,
  ``36h``); default empty: every ended batch.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_anthropix.api.retention import parse_age

DEFAULT_DESTINATION = (Path(__file__).resolve().parents[1] / "out" / "archive").as_uri()
DESTINATION = os.environ.get("ANTHROPIX_ARCHIVE_DESTINATION") or DEFAULT_DESTINATION
DESTINATION_CONN_ID = os.environ.get("ANTHROPIX_ARCHIVE_DESTINATION_CONN_ID") or None
OLDER_THAN = os.environ.get("ANTHROPIX_ARCHIVE_OLDER_THAN", "")
if OLDER_THAN.strip():
    parse_age(OLDER_THAN)  # a mistyped age fails when the DAG is parsed, not at midnight

log = logging.getLogger(__name__)

with DAG(
    dag_id="archive_results",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # It reads every batch of the key and writes to the archive: switched on by a person (unpause
    # it), not by a deployment that happens to load the example DAGs unpaused.
    is_paused_upon_creation=True,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "destination": Param(DESTINATION, type="string", description="Archive folder URI"),
        "older_than": Param(
            OLDER_THAN, type="string", description="Only batches at least this old (20d, 36h); empty: all"
        ),
    },
    tags=["anthropix", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def archive(destination: str, older_than: str) -> dict[str, Any]:
        """Export every ended, not yet archived batch; return the counts and the ids that need a look."""
        # Imported in the task, not at parse time: the dag-processor parses this file often.
        from airflow.sdk.exceptions import AirflowException

        from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
        from airflow_provider_anthropix.io.archive import archive_batches
        from airflow_provider_anthropix.io.publish import resolve_destination

        hook = AnthropixHook()
        try:
            report = archive_batches(
                hook,
                resolve_destination(destination, DESTINATION_CONN_ID, "archive destination"),
                older_than=parse_age(older_than) if older_than.strip() else None,
                logger=log,
            )
        finally:
            hook.close()
        summary = report.summary()
        log.info("Archive counts: %s", summary["counts"])
        if report.errors:
            failed = "; ".join(f"{batch_id}: {type(exc).__name__}: {exc}" for batch_id, exc in report.errors[:5])
            raise AirflowException(
                f"{len(report.errors)} batch(es) could not be archived ({failed}); a retry tries them again"
            )
        return summary

    archive(destination="{{ params.destination }}", older_than="{{ params.older_than }}")

"""Every request shape users send, through every path of a real run, lands exactly once.

One ``dag.test()`` carries the whole corpus (the hand-written valid.jsonl, a fixed draw of
Hypothesis compositions, and a line of several MB) through: CreateBatchOperator (its
validation and cost estimate, ``default_params`` with a system string and tools), the
sensor and FetchBatchResultsOperator to JSONL and Parquet; SplitRequestsOperator into mapped
creates and one merged fetch; and two BatchJobOperators whose ``default_params`` carry
``system`` (cached text blocks, then a string) and ``tools`` (the reported bug: their cost
estimate raised on such shard lines), exporting JSONL and Parquet. Then the CLI exports
the create's batch. The emulator under uvicorn on loopback answers every call.
Broken shapes are refused by both operators before any call reaches it.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_provider_anthropix.cli import main as cli_main
from airflow_provider_anthropix.emulator import EmulatorHandle
from tests.support.airflow import DAG_OPEN, load_dag_source, states
from tests.support.request_shapes import (
    DEFAULT_SYSTEM_BLOCKS,
    DEFAULT_SYSTEM_STRING,
    DEFAULT_TOOLS,
    large_request,
    load_invalid,
    load_valid,
    sample,
    valid_requests,
)

HEADER = """
from __future__ import annotations

import json

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.operators.job import BatchJobOperator
from airflow_provider_anthropix.operators.split import SplitRequestsOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor


@task
def record(path, value):
    with open(path, "w") as fh:
        json.dump(value, fh)

"""

WITH_STRING = {"system": DEFAULT_SYSTEM_STRING, "tools": DEFAULT_TOOLS}
WITH_BLOCKS = {"system": DEFAULT_SYSTEM_BLOCKS, "tools": DEFAULT_TOOLS}


def corpus() -> list[dict[str, Any]]:
    """Hand-written shapes, 40 Hypothesis compositions (the same every run) and a 3 MB line."""
    drawn = [{**r, "custom_id": f"hyp-{n:03d}"} for n, r in enumerate(sample(valid_requests("hyp"), 40))]
    return [*load_valid(), *drawn, large_request("big-scan", megabytes=3)]


def ids_of_jsonl(path: Path) -> Counter[str]:
    return Counter(json.loads(line)["custom_id"] for line in path.read_bytes().split(b"\n") if line)


def ids_of_parquet(path: Path) -> Counter[str]:
    return Counter(pq.read_table(path, columns=["custom_id"]).column("custom_id").to_pylist())


def test_every_shape_goes_through_every_path_and_lands_once(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, emulator_api_key: str, tmp_path: Path
) -> None:
    requests = corpus()
    expected = Counter(r["custom_id"] for r in requests)
    assert max(expected.values()) == 1
    source = tmp_path / "requests.jsonl"
    source.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in requests))
    assert source.stat().st_size > 4 << 20  # the scan line alone is over 4 MB encoded
    out, shards, batch_file = tmp_path / "out", tmp_path / "shards", tmp_path / "batch_id.json"
    shards.mkdir()
    dag = load_dag_source(
        airflow_dags,
        "request_shapes_everywhere",
        HEADER,
        f"""
        SOURCE = {str(source)!r}
        OUT = {str(out)!r}
        WITH_STRING = {WITH_STRING!r}
        WITH_BLOCKS = {WITH_BLOCKS!r}

        {DAG_OPEN}
            create = CreateBatchOperator(task_id="create", requests_path=SOURCE, default_params=WITH_STRING)
            wait = BatchEndedSensor(task_id="wait", batch_id=create.output, poke_interval=0.2)
            fetch_jsonl = FetchBatchResultsOperator(
                task_id="fetch_jsonl", batch_id=create.output, destination=OUT + "/fetch_jsonl"
            )
            fetch_parquet = FetchBatchResultsOperator(
                task_id="fetch_parquet", batch_id=create.output, destination=OUT + "/fetch_parquet", format="parquet"
            )
            wait >> [fetch_jsonl, fetch_parquet]
            record({str(batch_file)!r}, create.output)

            split = SplitRequestsOperator(
                task_id="split", requests_path=SOURCE, destination={str(shards)!r},
                default_params=WITH_BLOCKS, max_requests_per_batch=30,
            )
            creates = CreateBatchOperator.partial(task_id="create_shard").expand(requests_path=split.output)
            waits = BatchEndedSensor.partial(task_id="wait_shard", poke_interval=0.2).expand(batch_id=creates.output)
            fetch_split = FetchBatchResultsOperator(
                task_id="fetch_split", batch_id=creates.output, destination=OUT + "/split"
            )
            waits >> fetch_split

            BatchJobOperator(
                task_id="job_blocks", requests_path=SOURCE, destination=OUT + "/job_blocks",
                default_params=WITH_BLOCKS, max_requests_per_batch=25, poll_interval=0.2,
            )
            BatchJobOperator(
                task_id="job_string", requests_path=SOURCE, destination=OUT + "/job_string",
                default_params=WITH_STRING, format="parquet", poll_interval=0.2,
            )
        """,
    )
    dag_run = dag.test()
    assert set(states(dag_run).values()) == {"success"}, states(dag_run)

    assert ids_of_jsonl(out / "fetch_jsonl" / "results.jsonl") == expected
    assert ids_of_parquet(out / "fetch_parquet" / "results.parquet") == expected
    assert ids_of_jsonl(out / "split" / "results.jsonl") == expected
    assert ids_of_jsonl(out / "job_blocks" / "results.jsonl") == expected
    assert ids_of_parquet(out / "job_string" / "results.parquet") == expected
    lines = [json.loads(line) for line in (out / "job_blocks" / "results.jsonl").read_text().split("\n") if line]
    assert {line["result"]["type"] for line in lines} == {"succeeded"}

    # Both jobs made their estimate (the reported bug raised there) and wrote it into the manifest.
    for job in ("job_blocks", "job_string"):
        manifest = json.loads((out / job / "_manifest.json").read_text())
        assert manifest["estimate"]["requests"] == len(requests), job
    blocks = json.loads((out / "job_blocks" / "_manifest.json").read_text())["estimate"]
    assert blocks["cache_creation_input_tokens"] > 0  # the cached system prefix was seen as shared

    # The CLI exports the create's batch the same way, JSONL and Parquet.
    batch_id = json.loads(batch_file.read_text())
    base = ["--base-url", emulator.url]
    for fmt, name, count in (("jsonl", "results.jsonl", ids_of_jsonl), ("parquet", "results.parquet", ids_of_parquet)):
        err = io.StringIO()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ANTHROPIC_API_KEY", emulator_api_key)
            status = cli_main(
                ["batches", "results", batch_id, "-o", str(tmp_path / f"cli_{fmt}"), "--format", fmt, *base],
                out=io.StringIO(),
                err=err,
            )
        assert status == 0, err.getvalue()
        assert count(tmp_path / f"cli_{fmt}" / name) == expected


def test_broken_shapes_are_refused_by_create_and_job_before_anything_is_sent(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    cases = [c for c in load_invalid() if c["api_version"] == "2026-10-21"]
    source = tmp_path / "broken.jsonl"
    good = load_valid()[:2]
    source.write_text("".join(json.dumps(r) + "\n" for r in [*good, *(c["request"] for c in cases)]))
    log = tmp_path / "errors.json"
    dag = load_dag_source(
        airflow_dags,
        "request_shapes_refused",
        HEADER,
        f"""
        import traceback

        from airflow.sdk import get_current_context


        class Recorded(CreateBatchOperator):
            def execute(self, context):
                try:
                    return super().execute(context)
                except Exception as exc:
                    with open({str(log)!r} + ".create", "w") as fh:
                        fh.write(str(exc))
                    raise


        class RecordedJob(BatchJobOperator):
            def execute(self, context):
                try:
                    return super().execute(context)
                except Exception as exc:
                    with open({str(log)!r} + ".job", "w") as fh:
                        fh.write(str(exc))
                    raise


        {DAG_OPEN}
            Recorded(task_id="create", requests_path={str(source)!r}, retries=0, max_problems_shown=100)
            RecordedJob(
                task_id="job", requests_path={str(source)!r}, destination={str(tmp_path / "out")!r},
                default_params={WITH_BLOCKS!r}, retries=0, poll_interval=0.2,
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"create": "failed", "job": "failed"}
    assert sum(emulator.stats()["calls"].values()) == 0
    create_message = Path(str(log) + ".create").read_text()
    job_message = Path(str(log) + ".job").read_text()
    for line, case in enumerate(cases, start=len(good) + 1):
        assert f"{source}:{line}" in create_message and case["field"] in create_message, case["case"]
    assert f"{len(cases)} problems" in create_message
    # The job lists the first few, each with file, line and the field.
    assert f"{source}:{len(good) + 1}" in job_message and cases[0]["field"] in job_message

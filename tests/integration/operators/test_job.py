"""BatchJobOperator in real DAG runs (``dag.test()``, SQLite, the emulator): split, rounds, merged export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow_provider_anthropix.emulator import EmulatorHandle
from tests.support.airflow import DAG_OPEN, load_dag_source, states, write_prompts

HEADER = """
from __future__ import annotations

import json

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_anthropix.operators.job import BatchJobOperator

DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 16}


@task
def record(path, value):
    with open(path, "w") as fh:
        json.dump(value, fh)

"""


def load_dag(dags: Path, dag_id: str, body: str) -> Any:
    return load_dag_source(dags, dag_id, HEADER, body)


def read_lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_job_of_several_shards_merges_one_line_per_custom_id(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    ids = [f"j1-{i:03d}" for i in range(25)]
    errored = {ids[3]: "[[emulator:errored:api_error]]", ids[17]: "[[emulator:errored:invalid_request_error]]"}
    write_prompts(inputs / "a.jsonl", ids[:12], errored)
    write_prompts(inputs / "b.jsonl", ids[12:], errored)
    out = tmp_path / "out"
    summary_file = tmp_path / "summary.json"
    dag = load_dag(
        airflow_dags,
        "job_merge",
        f"""
        {DAG_OPEN}
            job = BatchJobOperator(
                task_id="job", requests_path={str(inputs)!r}, destination={str(out)!r},
                default_params=DEFAULTS, max_requests_per_batch=10, max_batches_in_flight=2,
                max_retry_rounds=1, max_errored_ratio=None, poll_interval=0.2,
            )
            record({str(summary_file)!r}, job.output)
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"job": "success", "record": "success"}
    lines = read_lines(out)
    assert sorted(line["custom_id"] for line in lines) == ids
    manifest = json.loads((out / "_manifest.json").read_text())
    job = manifest["job"]
    assert job["rounds"] == 2
    # 25 requests in shards of 10: 3 batches in round 0, then the one api_error request again.
    assert [b["round"] for b in job["batch_list"]] == [0, 0, 0, 1]
    assert job["retried"][0]["requests"] == 1
    assert manifest["counts"]["errored"] == 2
    assert emulator.stats()["batches_created"] == 4
    summary = json.loads(summary_file.read_text())
    assert summary["lines"] == 25


def test_split_feeds_mapped_creates_one_batch_per_file(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source = tmp_path / "prompts.jsonl"
    write_prompts(source, [f"s-{i:02d}" for i in range(7)])
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "shard-00009.jsonl").write_text("left by an earlier, longer split\n")
    (shards / "keep.txt").write_text("not the operator's")
    out = tmp_path / "merged"
    summary_file = tmp_path / "summary.json"
    dag = load_dag(
        airflow_dags,
        "job_split",
        f"""
        from airflow_provider_anthropix.operators.create import CreateBatchOperator
        from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
        from airflow_provider_anthropix.operators.split import SplitRequestsOperator
        from airflow_provider_anthropix.sensors.batch import BatchEndedSensor

        {DAG_OPEN}
            split = SplitRequestsOperator(
                task_id="split", requests_path={str(source)!r}, destination={str(shards)!r},
                default_params=DEFAULTS, max_requests_per_batch=3,
            )
            creates = CreateBatchOperator.partial(task_id="create").expand(requests_path=split.output)
            waits = BatchEndedSensor.partial(task_id="wait", poke_interval=0.2).expand(batch_id=creates.output)
            fetch = FetchBatchResultsOperator(task_id="fetch", batch_id=creates.output, destination={str(out)!r})
            waits >> fetch
            record({str(summary_file)!r}, fetch.output)
        """,
    )
    dag_run = dag.test()
    assert {ti.task_id for ti in dag_run.get_task_instances() if str(ti.state) == "success"} == {
        "split",
        "create",
        "wait",
        "fetch",
        "record",
    }
    assert sorted(p.name for p in shards.iterdir()) == [
        "keep.txt",
        "shard-00000.jsonl",
        "shard-00001.jsonl",
        "shard-00002.jsonl",
    ]
    assert [len(p.read_text().splitlines()) for p in sorted(shards.glob("shard-*.jsonl"))] == [3, 3, 1]
    assert emulator.stats()["batches_created"] == 3
    # The mapped creates' batches, fetched as one result set.
    summary = json.loads(summary_file.read_text())
    assert len(summary["batch_ids"]) == 3 and summary["lines"] == 7
    assert sorted(line["custom_id"] for line in read_lines(out)) == [f"s-{i:02d}" for i in range(7)]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert sorted(b["batch_id"] for b in manifest["batches"]) == sorted(summary["batch_ids"])


def test_transient_errors_and_expiries_are_fixed_by_one_retry_round(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    ids = [f"t1-{i:03d}" for i in range(30)]
    markers = {
        ids[2]: "[[emulator:errored-once:overloaded_error]]",
        ids[11]: "[[emulator:errored-once:api_error]]",
        ids[25]: "[[emulator:expired-once]]",
    }
    source = tmp_path / "prompts.jsonl"
    write_prompts(source, ids, markers)
    out = tmp_path / "out"
    summary_file = tmp_path / "summary.json"
    dag = load_dag(
        airflow_dags,
        "job_retry_round",
        f"""
        {DAG_OPEN}
            job = BatchJobOperator(
                task_id="job", requests_path={str(source)!r}, destination={str(out)!r},
                default_params=DEFAULTS, max_requests_per_batch=10, poll_interval=0.2,
            )
            record({str(summary_file)!r}, job.output)
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"job": "success", "record": "success"}  # max_errored_ratio=0.0: nothing errored
    lines = read_lines(out)
    assert sorted(line["custom_id"] for line in lines) == ids
    assert {line["result"]["type"] for line in lines} == {"succeeded"}
    summary = json.loads(summary_file.read_text())
    assert summary["job"]["rounds"] == 2
    assert summary["job"]["retried"][0]["requests"] == 3
    assert summary["job"]["retried"][0]["reasons"] == {"errored": 2, "expired": 1}
    assert summary["job"]["retried"][0]["outcome"]["succeeded"] == 3
    assert emulator.stats()["batches_created"] == 4


def test_a_round_that_cannot_fix_permanent_errors_stops_and_reports_them(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    ids = [f"p1-{i:02d}" for i in range(8)]
    markers = {ids[1]: "[[emulator:errored:invalid_request_error]]", ids[5]: "[[emulator:errored-once:api_error]]"}
    source = tmp_path / "prompts.jsonl"
    write_prompts(source, ids, markers)
    out = tmp_path / "out"
    dag = load_dag(
        airflow_dags,
        "job_permanent",
        f"""
        {DAG_OPEN}
            job = BatchJobOperator(
                task_id="job", requests_path={str(source)!r}, destination={str(out)!r},
                default_params=DEFAULTS, poll_interval=0.2, retries=0,
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"job": "failed"}
    # Land, then gate: every answer is published, the permanent error included.
    lines = {line["custom_id"]: line for line in read_lines(out)}
    assert sorted(lines) == ids
    assert lines[ids[1]]["result"]["error"]["error"]["type"] == "invalid_request_error"
    assert lines[ids[5]]["result"]["type"] == "succeeded"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["job"]["not_retried_errors"] == {"invalid_request_error": 1}
    assert emulator.stats()["batches_created"] == 2  # the first round, then only the api_error request

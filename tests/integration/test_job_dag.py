"""BatchJobOperator in real DAG runs (``dag.test()``, SQLite, the emulator): split, rounds, merged export."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support_airflow import migrated_airflow_home

from airflow_provider_anthropix.emulator import EmulatorHandle

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

DAG_OPEN = 'with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:'


@pytest.fixture(scope="module")
def airflow_dags(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    with migrated_airflow_home(home, dags):
        yield dags


def load_dag(dags: Path, dag_id: str, body: str) -> Any:
    source = HEADER + textwrap.dedent(body).replace("DAG_ID", repr(dag_id))
    path = dags / f"{dag_id}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"job_dag_{dag_id}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def write_prompts(path: Path, ids: list[str], marker: dict[str, str] | None = None) -> None:
    marker = marker or {}
    with path.open("w") as fh:
        for custom_id in ids:
            text = f"question {custom_id} {marker.get(custom_id, '')}".strip()
            fh.write(json.dumps({"custom_id": custom_id, "params": {"messages": [{"role": "user", "content": text}]}}))
            fh.write("\n")


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


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

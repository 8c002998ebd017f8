"""OpenLineage events of real DAG runs: ``dag.test()`` against the emulator, Airflow's listener, the file transport.

Airflow's OpenLineage plugin decides whether its listener exists when the plugin is first
imported, which in a test session is long before these tests set a transport; so the
fixture registers the provider's listener in the Task SDK's listener manager itself (what the
plugin does in a worker whose configuration names a transport) and removes it afterwards. The
transport is ``file`` (one JSON event per line, offline), the emission runs in a thread rather
than a forked process (``execute_in_thread``): a fork of the test process would copy its
emulator and database threads.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from tests.conftest import EMULATOR_API_KEY
from tests.support.airflow import load_dag_source, states
from tests.support.paths import REPO

pytest.importorskip("airflow.providers.openlineage")

try:
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401

    HAS_STATE_STORE = True
except ImportError:  # Airflow < 3.3
    HAS_STATE_STORE = False

pytestmark = pytest.mark.skipif(not HAS_STATE_STORE, reason="the nightly DAG's create needs Airflow 3.3+ here")

PROMPTS = REPO / "example_dags" / "data" / "prompts.jsonl"


@pytest.fixture
def lineage_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """OpenLineage on, with the file transport writing to the returned path; the listener registered."""
    from airflow.providers.openlineage.plugins.listener import OpenLineageListener
    from airflow.sdk.listener import get_listener_manager

    # Plugins are loaded (once per process) before OpenLineage is configured: the plugin's own
    # listener stays off, so it neither doubles the events here nor outlives this test.
    manager = get_listener_manager()
    assert not any(isinstance(p, OpenLineageListener) for p in manager.pm.get_plugins())
    events = tmp_path / "openlineage.jsonl"
    transport = {"type": "file", "log_file_path": str(events), "append": True}
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps(transport))
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD", "True")
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", "anthropix-tests")
    listener = OpenLineageListener()
    manager.add_listener(listener)
    try:
        yield events
    finally:
        manager.pm.unregister(listener)


def read_events(path: Path) -> list[dict[str, Any]]:
    assert path.exists(), "the OpenLineage listener wrote no event"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def task_events(events: list[dict[str, Any]], task_id: str) -> dict[str, dict[str, Any]]:
    """The events of one task by type (``START``, ``COMPLETE``, ``FAIL``), one of each; a task's job is ``<dag>.<task>``."""
    found = [e for e in events if e["job"]["name"].endswith(f".{task_id}")]
    kinds = [e["eventType"] for e in found]
    assert len(kinds) == len(set(kinds)), f"{task_id}: {kinds}"
    return {e["eventType"]: e for e in found}


def names(datasets: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def run_nightly(airflow_dags: Path, output: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("ANTHROPIX_NIGHTLY_OUTPUT", output.as_uri())
    monkeypatch.setenv("ANTHROPIX_NIGHTLY_POLL_INTERVAL", "0.2")
    target = airflow_dags / "example_nightly_lineage"
    shutil.copytree(REPO / "example_dags", target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.spec_from_file_location("example_nightly_lineage", target / "nightly_batch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag.test()


def test_nightly_run_emits_lineage_with_the_requests_results_and_batch_facet(
    airflow_dags: Path,
    emulator: EmulatorHandle,
    anthropix_conn_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lineage_events: Path,
) -> None:
    emulator.config.processing_seconds = 0.5
    output = tmp_path / "nightly"
    dag_run = run_nightly(airflow_dags, output, monkeypatch)
    assert set(states(dag_run).values()) == {"success"}, states(dag_run)
    [requests_file] = output.rglob("requests.jsonl.gz")
    [manifest_file] = output.rglob("_manifest.json")
    results = manifest_file.parent
    manifest = json.loads(manifest_file.read_text())
    events = read_events(lineage_events)

    create = task_events(events, "create_batch")
    fetch = task_events(events, "fetch_results")
    assert {"START", "COMPLETE"} <= set(create), sorted(create)
    assert {"START", "COMPLETE"} <= set(fetch), sorted(fetch)
    # The create reads the requests file and names where its results will go; the fetch writes them.
    for event in (create["START"], create["COMPLETE"]):
        assert names(event["inputs"]) == [("file", str(requests_file))]
        assert names(event["outputs"]) == [("file", str(results))]
    for event in (fetch["START"], fetch["COMPLETE"]):
        assert event["inputs"] == []
        assert names(event["outputs"]) == [("file", str(results))]

    created = create["COMPLETE"]["run"]["facets"]["anthropix_batch"]
    assert created["batchIds"] == [manifest["batch_id"]]
    assert created["create"] == "created"
    assert created["requests"] == manifest["lines"]
    assert created["estimatedCostUsd"] > 0
    fetched = fetch["COMPLETE"]["run"]["facets"]["anthropix_batch"]
    assert fetched["batchIds"] == [manifest["batch_id"]]
    assert fetched["requestCounts"] == manifest["counts"]
    assert fetched["tokens"] == manifest["tokens"]
    assert fetched["actualCostUsd"] == pytest.approx(manifest["actual"]["cost_usd"])
    assert fetched["estimatedCostUsd"] == pytest.approx(manifest["estimate"]["expected_cost_usd"])
    assert fetched["estimateError"] == pytest.approx(manifest["estimate_error"]["cost_vs_expected"], abs=1e-4)
    assert fetched["exportBytes"] == sum(f["size"] for f in manifest["files"])
    assert fetched["manifest"] == manifest_file.as_uri()
    statistics = fetch["COMPLETE"]["outputs"][0]["outputFacets"]["outputStatistics"]
    assert statistics["rowCount"] == manifest["lines"]
    assert "anthropix_batch" not in create["START"]["run"]["facets"]

    # No event carries the key, and none a prompt (the requests file's text) or the system prompt.
    text = lineage_events.read_text()
    assert EMULATOR_API_KEY not in text
    first_prompt = json.loads(PROMPTS.read_text().splitlines()[0])["prompt"]
    assert first_prompt not in text
    assert "concise assistant" not in text


JOB_HEADER = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_anthropix.operators.job import BatchJobOperator

DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 16}
"""


def test_a_parquet_job_names_its_output_columns_and_rounds(
    airflow_dags: Path,
    emulator: EmulatorHandle,
    anthropix_conn_env: str,
    tmp_path: Path,
    lineage_events: Path,
) -> None:
    from tests.support.airflow import DAG_OPEN, write_prompts

    emulator.config.processing_seconds = 0.0
    requests = tmp_path / "in" / "requests.jsonl"
    requests.parent.mkdir()
    write_prompts(requests, [f"q-{i}" for i in range(6)])
    results = tmp_path / "out"
    dag = load_dag_source(
        airflow_dags,
        "lineage_job",
        JOB_HEADER,
        f"""
        {DAG_OPEN}
            BatchJobOperator(
                task_id="job", requests_path={str(requests)!r}, destination={results.as_uri()!r},
                default_params=DEFAULTS, max_requests_per_batch=4, format="parquet", poll_interval=0.2,
                deferrable=False,
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"job": "success"}
    job = task_events(read_events(lineage_events), "job")
    complete = job["COMPLETE"]
    assert names(complete["inputs"]) == [("file", str(requests))]
    [output] = complete["outputs"]
    assert (output["namespace"], output["name"]) == ("file", str(results))
    columns = {f["name"]: f["type"] for f in output["facets"]["schema"]["fields"]}
    assert columns["custom_id"] == "string"
    assert columns["input_tokens"] == "int64"
    facet = complete["run"]["facets"]["anthropix_batch"]
    assert len(facet["batchIds"]) == 2
    assert facet["batches"] == 2
    assert facet["retryRounds"] == 0
    assert facet["requestCounts"]["succeeded"] == 6
    assert job["START"]["outputs"][0]["facets"]["schema"]["fields"][0]["name"] == "custom_id"

"""The provider's metrics reach a real StatsD server: a UDP socket of the test, through Airflow's ``Stats``.

A batch job run by ``dag.test()`` against the emulator sends the create, adoption, retry
round, estimate, outcome, cost and export metrics; the trigger's poll loop and the hook's
cancel send theirs. Tags travel in InfluxDB form (``name,conn_id=...:1|c``), which is how
Airflow's StatsD logger carries them (``[metrics] statsd_influxdb_enabled``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.metrics import METRICS
from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger
from tests.conftest import EMULATOR_API_KEY
from tests.support.airflow import DAG_OPEN, load_dag_source, states, write_prompts
from tests.support.statsd import StatsdServer, statsd_server

try:
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401

    HAS_STATE_STORE = True
except ImportError:  # Airflow < 3.3
    HAS_STATE_STORE = False

HEADER = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_anthropix.operators.job import BatchJobOperator

DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 16}
"""


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdServer]:
    with statsd_server(monkeypatch) as server:
        yield server


def total(values: list[tuple[str, dict[str, str]]]) -> float:
    return sum(float(value.split("|")[0]) for value, _ in values)


# dag.test() runs need Airflow 3.3 here (as in test_dag_lifecycle.py); on 3.2 the unit smoke test sends each kind.
@pytest.mark.skipif(not HAS_STATE_STORE, reason="dag.test() runs need Airflow 3.3+")
def test_a_batch_job_sends_the_documented_metrics(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path, statsd: StatsdServer
) -> None:
    emulator.config.processing_seconds = 0.0
    emulator.add_fault("drop", endpoint="create")  # the first create's answer is lost: the job adopts its batch
    requests = tmp_path / "requests.jsonl"
    ids = [f"q-{i}" for i in range(7)]
    write_prompts(requests, ids, {"q-5": "[[emulator:errored-once]]"})  # one request needs a retry round
    dag = load_dag_source(
        airflow_dags,
        "metrics_job",
        HEADER,
        f"""
        {DAG_OPEN}
            BatchJobOperator(
                task_id="job", requests_path={str(requests)!r}, destination={(tmp_path / "out").as_uri()!r},
                default_params=DEFAULTS, max_requests_per_batch=4, poll_interval=0.2, deferrable=False,
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"job": "success"}
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    got = statsd.metrics()

    assert total(got["anthropix.batches.created"]) == 2  # the second shard, the retry round
    assert total(got["anthropix.batches.adopted"]) == 1
    assert total(got["anthropix.requests.submitted"]) == 4  # 3 + 1 (the adopted batch was not a create answer)
    assert total(got["anthropix.job.retry_rounds"]) == 1
    assert total(got["anthropix.requests.succeeded"]) == 7
    assert total(got["anthropix.cost.estimated_usd"]) == pytest.approx(manifest["estimate"]["expected_cost_usd"])
    assert total(got["anthropix.cost.actual_usd"]) == pytest.approx(manifest["actual"]["cost_usd"])
    # A negative gauge goes out as "0|g" then the value (a bare "-x|g" would be a decrement).
    error = got["anthropix.cost.estimate_error"][-1][0]
    assert error.endswith("|g")
    assert float(error.split("|")[0]) == pytest.approx(manifest["estimate_error"]["cost_vs_expected"], abs=1e-4)
    assert total(got["anthropix.export.bytes"]) == sum(f["size"] for f in manifest["files"])
    [(duration, _)] = got["anthropix.export.duration"]
    assert duration.endswith("|ms")
    # Every name is a documented one, with the documented tags.
    for name, sent in got.items():
        kind, tag_names, _ = METRICS[name]
        for value, tags in sent:
            assert set(tags) == set(tag_names), (name, tags)
            assert value.endswith({"counter": "|c", "gauge": "|g", "timer": "|ms"}[kind]), (name, value)
    assert got["anthropix.job.retry_rounds"][0][1] == {"conn_id": "anthropix_default", "operator": "BatchJobOperator"}
    assert EMULATOR_API_KEY not in "\n".join(statsd.lines)


def test_poll_failures_and_cancels_are_counted(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch, statsd: StatsdServer
) -> None:
    conn = {"conn_type": "anthropix", "password": EMULATOR_API_KEY, "host": emulator.url, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_METRICS", json.dumps(conn))
    hook = AnthropixHook(anthropix_conn_id="anthropix_metrics")
    request = {
        "custom_id": "r-0",
        "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "q"}]},
    }
    batch = hook.create_batch([request])
    emulator.add_fault("status", endpoint="retrieve", status=529, count=2)
    trigger = BatchEndedTrigger(batch_id=batch.id, anthropix_conn_id="anthropix_metrics", poll_interval=0.05)

    async def events() -> list[dict[str, object]]:
        return [event.payload async for event in trigger.run()]

    [event] = asyncio.run(asyncio.wait_for(events(), 20))
    assert event["status"] == "success"
    emulator.config.processing_seconds = 600
    hook.cancel_batch(hook.create_batch([request]).id)
    got = statsd.metrics()
    assert (
        got["anthropix.poll.failures"]
        == [("1|c", {"conn_id": "anthropix_metrics", "trigger": "BatchEndedTrigger"})] * 2
    )
    assert got["anthropix.batches.canceled"] == [("1|c", {"conn_id": "anthropix_metrics"})]
    assert total(got["anthropix.batches.created"]) == 2

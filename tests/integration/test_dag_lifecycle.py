"""The lifecycle operators in real DAG runs: ``dag.test()`` on a temporary SQLite metadata DB, against the emulator.

This is how a user's DAG exercises them: templating, XCom between tasks, deferral through
the trigger's serialized form (``dag.test`` runs triggers inline), Airflow's own task state
store and retries. Each DAG is written to a temporary DAGs folder (``dag.test`` needs the
DAG in a bundle) and imported from there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from tests.support.airflow import DAG_OPEN, load_dag_source, load_example_dag, states

try:
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401

    HAS_STATE_STORE = True
except ImportError:  # Airflow < 3.3
    HAS_STATE_STORE = False

# These runs need Airflow 3.3's task state store (crash safety); on 3.2 the smoke tests cover the operators.
pytestmark = pytest.mark.skipif(not HAS_STATE_STORE, reason="needs Airflow 3.3+ (task state store)")

HEADER = """
from __future__ import annotations

import json
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_anthropix.operators.cancel import CancelBatchOperator
from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor

DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 16}


def prompts(n, text="question"):
    return [
        {"custom_id": f"q-{i}", "params": {"messages": [{"role": "user", "content": f"{text} {i}"}]}}
        for i in range(n)
    ]


@task
def record(path, values):
    with open(path, "w") as fh:
        json.dump(values, fh)

"""


def load_dag(dags: Path, dag_id: str, body: str) -> Any:
    return load_dag_source(dags, dag_id, HEADER, body)


def test_create_then_deferred_sensor_then_summary_downstream(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path, capsys: Any
) -> None:
    emulator.config.processing_seconds = 2.0  # still running when the sensor first looks: it must defer
    out = tmp_path / "out.json"
    dag = load_dag(
        airflow_dags,
        "lc_success",
        f"""
        {DAG_OPEN}
            create = CreateBatchOperator(task_id="create", requests=prompts(12), default_params=DEFAULTS)
            wait = BatchEndedSensor(task_id="wait", batch_id=create.output, deferrable=True, poll_interval=0.2)
            record({str(out)!r}, {{"batch_id": create.output, "summary": wait.output}})
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"create": "success", "wait": "success", "record": "success"}
    recorded = json.loads(out.read_text())
    batch_id = recorded["batch_id"]
    summary = recorded["summary"]
    assert summary["batch_id"] == batch_id
    assert summary["processing_status"] == "ended"
    assert summary["request_counts"]["succeeded"] == 12
    assert summary["results_url"].endswith(f"/v1/messages/batches/{batch_id}/results")
    assert set(summary) == {
        "batch_id",
        "processing_status",
        "request_counts",
        "total",
        "created_at",
        "ended_at",
        "expires_at",
        "results_url",
    }
    assert emulator.stats()["batches_created"] == 1
    logs = capsys.readouterr().out
    assert "deferring to the triggerer" in logs
    assert "sk-ant-emulator-test-key" not in logs


def test_retry_after_a_crash_right_after_create_makes_no_second_batch(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    dag = load_dag(
        airflow_dags,
        "lc_crash",
        f"""
        class CrashingCreate(CreateBatchOperator):
            # Dies like a worker would, right after the API answered and the id was recorded.
            def _record(self, store, batch):
                super()._record(store, batch)
                if self._try == 1:
                    raise SystemExit("worker lost right after the create")

            def execute(self, context):
                self._try = context["ti"].try_number
                return super().execute(context)

        {DAG_OPEN}
            create = CrashingCreate(
                task_id="create", requests=prompts(7), default_params=DEFAULTS,
                retries=1, retry_delay=timedelta(seconds=0),
            )
            record({str(out)!r}, {{"batch_id": create.output}})
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"create": "success", "record": "success"}
    assert emulator.stats()["batches_created"] == 1
    batch_id = json.loads(out.read_text())["batch_id"]
    assert AnthropixHook().get_batch(batch_id).request_counts.total == 7


def test_lost_create_answer_is_recovered_in_a_dag_run(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    emulator.add_fault("drop", endpoint="create")
    out = tmp_path / "out.json"
    dag = load_dag(
        airflow_dags,
        "lc_lost",
        f"""
        {DAG_OPEN}
            create = CreateBatchOperator(task_id="create", requests=prompts(3), default_params=DEFAULTS)
            record({str(out)!r}, {{"batch_id": create.output}})
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"create": "success", "record": "success"}
    assert emulator.stats()["batches_created"] == 1
    assert emulator.stats()["calls"]["create"] == 1
    assert json.loads(out.read_text())["batch_id"].startswith("msgbatch_")


def test_wrong_key_fails_the_task_once_without_retries(
    airflow_dags: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "anthropix", "password": "sk-wrong-but-secret", "host": emulator.url}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", json.dumps(conn))
    dag = load_dag(
        airflow_dags,
        "lc_401",
        f"""
        {DAG_OPEN}
            CreateBatchOperator(
                task_id="create", requests=prompts(2), default_params=DEFAULTS,
                retries=3, retry_delay=timedelta(seconds=0),
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"create": "failed"}
    assert emulator.stats()["rejected"] == {"models": 1}  # the model check is the first call; no create


def test_outcome_policy_fails_a_batch_with_too_many_errors(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, capsys: Any
) -> None:
    emulator.config.processing_seconds = 0.0
    dag = load_dag(
        airflow_dags,
        "lc_policy",
        f"""
        {DAG_OPEN}
            requests = prompts(6) + [
                {{"custom_id": f"bad-{{i}}", "params": {{"messages": [
                    {{"role": "user", "content": "[[emulator:errored]] q"}}]}}}}
                for i in range(4)
            ]
            create = CreateBatchOperator(task_id="create", requests=requests, default_params=DEFAULTS)
            BatchEndedSensor(
                task_id="wait", batch_id=create.output, mode="poke", poll_interval=0.2, max_errored_ratio=0.25,
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"create": "success", "wait": "failed"}
    logs = capsys.readouterr().out
    assert "6 succeeded, 4 errored, 0 canceled, 0 expired of 10" in logs
    assert "errored ratio 40.0% is above max_errored_ratio 25.0%" in logs


def test_deferred_timeout_cancels_the_batch(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    emulator.config.processing_seconds = 600
    out = Path(str(airflow_dags)) / "lc_timeout_id.json"
    dag = load_dag(
        airflow_dags,
        "lc_timeout",
        f"""
        {DAG_OPEN}
            create = CreateBatchOperator(task_id="create", requests=prompts(2), default_params=DEFAULTS)
            record({str(out)!r}, {{"batch_id": create.output}})
            BatchEndedSensor(
                task_id="wait", batch_id=create.output, deferrable=True, poll_interval=0.2, timeout=1,
                on_timeout="cancel",
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run)["wait"] == "failed"
    batch = AnthropixHook().get_batch(json.loads(out.read_text())["batch_id"])
    assert batch.cancel_initiated_at is not None
    assert emulator.stats()["calls"]["cancel"] == 1


def test_reschedule_mode_and_deferred_cancel_wait(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    emulator.config.processing_seconds = 1.5
    emulator.config.cancel_seconds = 0.5
    out = tmp_path / "out.json"
    dag = load_dag(
        airflow_dags,
        "lc_modes",
        f"""
        {DAG_OPEN}
            first = CreateBatchOperator(task_id="first", requests=prompts(3), default_params=DEFAULTS)
            wait = BatchEndedSensor(task_id="wait", batch_id=first.output, mode="reschedule", poll_interval=0.5)
            second = CreateBatchOperator(task_id="second", requests=prompts(2), default_params=DEFAULTS)
            cancel = CancelBatchOperator(
                task_id="cancel", batch_id=second.output, wait_for_end=True, deferrable=True, poll_interval=0.2,
            )
            record({str(out)!r}, {{"waited": wait.output, "canceled": cancel.output}})
        """,
    )
    dag_run = dag.test()
    assert set(states(dag_run).values()) == {"success"}
    recorded = json.loads(out.read_text())
    assert recorded["waited"]["request_counts"]["succeeded"] == 3
    assert recorded["canceled"]["processing_status"] == "ended"
    assert emulator.stats()["calls"]["cancel"] == 1


def test_nightly_example_dag_end_to_end(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path, monkeypatch: Any
) -> None:
    emulator.config.processing_seconds = 1.0
    output = tmp_path / "nightly"
    monkeypatch.setenv("ANTHROPIX_NIGHTLY_OUTPUT", output.as_uri())
    monkeypatch.setenv("ANTHROPIX_NIGHTLY_POLL_INTERVAL", "0.2")
    dag_run = load_example_dag(airflow_dags, "nightly_batch.py").test()
    assert set(states(dag_run).values()) == {"success"}, states(dag_run)
    manifests = list(output.rglob("_manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert "300" in json.dumps(manifest)
    assert len(list(output.rglob("requests.jsonl.gz"))) == 1
    assert emulator.stats()["batches_created"] == 1

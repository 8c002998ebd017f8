"""Operator extra links in a real DAG run: what each task stored for the UI's link buttons.

Airflow 3 makes a task's links when the task finishes, in the task process, and keeps each
in XCom under the link's ``xcom_key``; the UI shows those strings. So the test runs a DAG
with ``dag.test()`` and reads the stored links back from the metadata database.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.links import (
    AnthropicConsoleBatchesLink,
    AnthropicConsoleLink,
    BatchResultsLink,
    ConsoleTemplateError,
    console_list_url,
    console_url,
    results_url,
)
from tests.support.airflow import import_dag

try:
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401

    AIRFLOW_33 = True
except ImportError:  # Airflow 3.2
    AIRFLOW_33 = False
#: dag.test() on Airflow 3.2 with this lock file's pydantic fails in Airflow's Execution API models.
needs_dag_test = pytest.mark.skipif(not AIRFLOW_33, reason="dag.test() needs Airflow 3.3 with this lock file")

DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor

with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
    create = CreateBatchOperator(
        task_id="create",
        anthropix_conn_id=CONN_ID,
        requests=[{"custom_id": f"q-{i}", "params": {"messages": [{"role": "user", "content": "hi"}]}} for i in range(3)],
        default_params={"model": "claude-haiku-4-5", "max_tokens": 8},
    )
    wait = BatchEndedSensor(task_id="wait", batch_id=create.output, anthropix_conn_id=CONN_ID, poke_interval=0.1)
    fetch = FetchBatchResultsOperator(
        task_id="fetch", batch_id=create.output, destination=DEST, anthropix_conn_id=CONN_ID
    )
    create >> wait >> fetch
"""


def _dag(dags: Path, dag_id: str, conn_id: str, dest: str) -> Any:
    path = dags / f"{dag_id}.py"
    source = DAG_SOURCE.replace("DAG_ID", repr(dag_id)).replace("CONN_ID", repr(conn_id)).replace("DEST", repr(dest))
    path.write_text(textwrap.dedent(source))
    return import_dag(path, f"links_dag_{dag_id}")


def _stored_links(dag_run: Any) -> dict[tuple[str, str], Any]:
    """(task_id, xcom key) -> value of every ``_link_*`` XCom of the run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.run_id == dag_run.run_id, XComModel.key.like("_link_%"))
        return {(row.task_id, row.key): row.value for row in rows}


def _value(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) and raw.startswith('"') else raw


def _run(dags: Path, dag_id: str, conn_id: str, dest: str) -> tuple[Any, dict[tuple[str, str], Any]]:
    dag_run = _dag(dags, dag_id, conn_id, dest).test()
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states == {"create": "success", "wait": "success", "fetch": "success"}
    links = {key: _value(value) for key, value in _stored_links(dag_run).items()}
    batch_id = _value(
        next(ti for ti in dag_run.get_task_instances() if ti.task_id == "create").xcom_pull(task_ids="create")
    )
    return batch_id, links


CONSOLE = AnthropicConsoleLink().xcom_key
RESULTS = BatchResultsLink().xcom_key


@needs_dag_test
def test_links_with_the_default_console(
    airflow_dags: Path, emulator: EmulatorHandle, emulator_api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "anthropix", "password": emulator_api_key, "host": emulator.url}
    monkeypatch.setenv("AIRFLOW_CONN_LINKS_DEFAULT", json.dumps(conn))
    dest = f"file://{tmp_path}/results"
    batch_id, links = _run(airflow_dags, "links_default", "links_default", dest)
    console = f"https://console.anthropic.com/workspaces/default/batches/{batch_id}"
    assert links[("create", CONSOLE)] == console
    assert links[("wait", CONSOLE)] == console
    assert links[("fetch", CONSOLE)] == console
    assert links[("fetch", RESULTS)] == dest


@needs_dag_test
def test_links_follow_the_connection_template(
    airflow_dags: Path, emulator: EmulatorHandle, emulator_api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = {
        "console_url_template": "https://console.example.test/{workspace_id}/b/{batch_id}",
        "workspace_id": "wrk_7",
    }
    conn = {"conn_type": "anthropix", "password": emulator_api_key, "host": emulator.url, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_LINKS_CUSTOM", json.dumps(conn))
    batch_id, links = _run(airflow_dags, "links_custom", "links_custom", f"file://{tmp_path}/r2")
    assert links[("create", CONSOLE)] == f"https://console.example.test/wrk_7/b/{batch_id}"
    assert links[("wait", CONSOLE)] == f"https://console.example.test/wrk_7/b/{batch_id}"


def test_console_url_defaults_and_escaping() -> None:
    assert console_url("msgbatch_1") == "https://console.anthropic.com/workspaces/default/batches/msgbatch_1"
    assert console_url("a/b?c", workspace_id="w s").endswith("/workspaces/w%20s/batches/a%2Fb%3Fc")
    assert console_list_url() == "https://console.anthropic.com/workspaces/default/batches"
    with pytest.raises(ConsoleTemplateError, match="only"):
        console_url("x", "https://c.test/{nope}")
    with pytest.raises(ConsoleTemplateError, match="http"):
        console_url("x", "javascript:alert({batch_id})")


def test_results_url_per_store() -> None:
    assert results_url("file:///data/run") == "file:///data/run"
    assert results_url("s3://aws_conn@bucket/a/b") == (
        "https://s3.console.aws.amazon.com/s3/buckets/bucket?prefix=a%2Fb%2F"
    )
    assert results_url("gs://bkt/x/y") == "https://console.cloud.google.com/storage/browser/bkt/x/y"


def test_link_names_are_distinct() -> None:
    links = [AnthropicConsoleLink(), AnthropicConsoleBatchesLink(), BatchResultsLink()]
    assert len({link.name for link in links}) == len({link.xcom_key for link in links}) == 3

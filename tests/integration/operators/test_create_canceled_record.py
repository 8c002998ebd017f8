"""CreateBatchOperator in a real DAG run: a batch recorded by an earlier try, canceled since, is not reused.

Airflow 3.3's task state store keeps the batch id across retries so that a retry does not
pay twice. But a recorded batch that was canceled in the meantime (someone canceled it in
the console, or ``cancel_on_kill``) holds no answers: the retry must create a new batch
instead of handing the canceled one downstream.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from tests.support.airflow import DAG_OPEN, load_dag_source, states

try:
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401

    HAS_STATE_STORE = True
except ImportError:  # Airflow < 3.3
    HAS_STATE_STORE = False

pytestmark = pytest.mark.skipif(not HAS_STATE_STORE, reason="needs Airflow 3.3+ (task state store)")

HEADER = """
from __future__ import annotations

import json
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_anthropix.operators.create import STATE_BATCH_ID, CreateBatchOperator

DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 16}
REQUESTS = [
    {"custom_id": f"q-{i}", "params": {"messages": [{"role": "user", "content": f"question {i}"}]}} for i in range(5)
]


@task
def record(path, value):
    with open(path, "w") as fh:
        json.dump(value, fh)

"""


@pytest.mark.parametrize("cancel", [True, False], ids=["canceled_since", "still_running"])
def test_a_retry_creates_a_new_batch_when_the_recorded_one_was_canceled(
    cancel: bool,
    airflow_dags: Path,
    emulator: EmulatorHandle,
    anthropix_conn_env: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first_file = tmp_path / "first.json"
    out = tmp_path / "out.json"
    dag = load_dag_source(
        airflow_dags,
        f"cr_recorded_{'canceled' if cancel else 'running'}",
        HEADER,
        f"""
        class FailsAfterCreate(CreateBatchOperator):
            # Try 1 creates and records the batch in Airflow's task state store, then the worker dies;
            # before the retry runs, the batch is canceled (or not).
            def execute(self, context):
                if context["ti"].try_number > 1:
                    return super().execute(context)
                batch_id = super().execute(context)
                assert context["task_state_store"].get(STATE_BATCH_ID) == batch_id
                with open({str(first_file)!r}, "w") as fh:
                    json.dump(batch_id, fh)
                if {cancel!r}:
                    self.hook.cancel_batch(batch_id)
                raise RuntimeError("worker lost after the create")

        {DAG_OPEN}
            create = FailsAfterCreate(
                task_id="create", requests=REQUESTS, default_params=DEFAULTS,
                retries=1, retry_delay=timedelta(seconds=0),
            )
            record({str(out)!r}, create.output)
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"create": "success", "record": "success"}
    first = json.loads(first_file.read_text())
    final = json.loads(out.read_text())
    hook = AnthropixHook()
    logs = capsys.readouterr().out
    if cancel:
        assert final != first
        assert emulator.stats()["batches_created"] == 2
        assert hook.get_batch(first).cancel_initiated_at is not None
        new = hook.get_batch(final)
        assert new.cancel_initiated_at is None and new.request_counts.total == 5
        assert f"Batch {first} recorded by an earlier try was canceled; creating a new one" in logs
    else:
        # The control: an uncanceled recorded batch is reused, not paid for twice.
        assert final == first
        assert emulator.stats()["batches_created"] == 1
        assert f"Reusing batch {first}" in logs

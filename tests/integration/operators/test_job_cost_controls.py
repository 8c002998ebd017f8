"""The cost controls of BatchJobOperator and CreateBatchOperator in real DAG runs (``dag.test()``, the emulator).

Dry run, budget gate on either basis, the equal-is-within-budget edge, a model without a
price, an unknown model and ``check_models=False``: each run says what was (not) paid for
through the emulator's own count of created batches.

The inputs are small (at most 50 requests per model are counted exactly), so the estimate
has no extrapolation error and a dry run's figures are the ones the real run computes again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from tests.support.airflow import DAG_OPEN, load_dag_source, states, write_prompts

MODEL = "claude-haiku-4-5"

HEADER = f"""
from __future__ import annotations

import json
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.operators.job import BatchJobOperator

DEFAULTS = {{"model": {MODEL!r}, "max_tokens": 400}}


@task
def record(path, value):
    with open(path, "w") as fh:
        json.dump(value, fh)


@task(trigger_rule="all_done")
def record_estimate(path, task_id, ti=None):
    # The create returns its batch id; its estimate is XCom key "estimate", pushed before a skip or failure.
    with open(path, "w") as fh:
        json.dump(ti.xcom_pull(task_ids=task_id, key="estimate"), fh)

"""


def load_dag(dags: Path, dag_id: str, body: str) -> Any:
    return load_dag_source(dags, dag_id, HEADER, body)


def prompts(tmp_path: Path, n: int = 6) -> Path:
    path = tmp_path / "prompts.jsonl"
    write_prompts(path, [f"c-{i:02d}" for i in range(n)])
    return path


def try_numbers(dag_run: Any) -> dict[str, int]:
    return {ti.task_id: int(ti.try_number) for ti in dag_run.get_task_instances()}


def dry_run_estimate(dags: Path, dag_id: str, source: Path, folder: Path) -> dict[str, Any]:
    """The estimate of ``source`` from a dry run of the job (nothing sent)."""
    summary_file = folder / "dry.json"
    dag = load_dag(
        dags,
        dag_id,
        f"""
        {DAG_OPEN}
            job = BatchJobOperator(
                task_id="job", requests_path={str(source)!r}, destination={str(folder / "dry" / "out")!r},
                default_params=DEFAULTS, dry_run=True,
            )
            record({str(summary_file)!r}, job.output)
        """,
    )
    assert states(dag.test()) == {"job": "success", "record": "success"}
    estimate: dict[str, Any] = json.loads(summary_file.read_text())["estimate"]
    return estimate


def test_dry_run_sends_nothing_and_returns_the_estimate(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source = prompts(tmp_path, 7)
    summary_file = tmp_path / "summary.json"
    dag = load_dag(
        airflow_dags,
        "jc_dry_run",
        f"""
        {DAG_OPEN}
            job = BatchJobOperator(
                task_id="job", requests_path={str(source)!r}, destination={str(tmp_path / "out")!r},
                default_params=DEFAULTS, max_requests_per_batch=3, dry_run=True, poll_interval=0.2,
            )
            record({str(summary_file)!r}, job.output)
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"job": "success", "record": "success"}
    assert emulator.stats()["batches_created"] == 0
    assert emulator.stats()["calls"].get("create", 0) == 0
    summary = json.loads(summary_file.read_text())
    assert summary["dry_run"] is True
    assert summary["requests"] == 7 and summary["batches"] == 3  # 7 requests in shards of 3
    estimate = summary["estimate"]
    assert estimate["requests"] == 7 and estimate["sampled"] == 7
    assert estimate["output_tokens_worst_case"] == 7 * 400
    assert 0 < estimate["expected_cost_usd"] < estimate["worst_case_cost_usd"]
    assert set(estimate["by_model"]) == {MODEL}
    # Nothing was published, and no working folder is left behind (a later real run splits again).
    out = tmp_path / "out"
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert leftovers == []
    assert summary["work_prefix"].startswith(f"file://{out}/")
    assert not Path(summary["work_prefix"].removeprefix("file://")).exists()


def test_a_budget_below_the_worst_case_fails_without_retries_and_sends_nothing(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path, capsys: Any
) -> None:
    source = prompts(tmp_path)
    dag = load_dag(
        airflow_dags,
        "jc_over_budget",
        f"""
        {DAG_OPEN}
            BatchJobOperator(
                task_id="job", requests_path={str(source)!r}, destination={str(tmp_path / "out")!r},
                default_params=DEFAULTS, max_cost_usd="0.0001", budget_basis="worst_case", poll_interval=0.2,
                retries=2, retry_delay=timedelta(seconds=0),
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"job": "failed"}
    assert try_numbers(dag_run) == {"job": 1}  # failed for good: a retry would be over budget again
    assert emulator.stats()["batches_created"] == 0
    assert emulator.stats()["calls"].get("create", 0) == 0
    logs = capsys.readouterr().out
    assert "over budget: the worst case cost $" in logs
    assert "max_cost_usd $0.0001" in logs and "nothing was sent" in logs
    assert "Most expensive requests: c-0" in logs  # named, with where they are
    assert "budget_basis='expected'" in logs


def test_a_budget_between_expected_and_worst_case_depends_on_the_basis(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source = prompts(tmp_path)
    estimate = dry_run_estimate(airflow_dags, "jc_between_dry", source, tmp_path)
    expected, worst = estimate["expected_cost_usd"], estimate["worst_case_cost_usd"]
    assert expected < worst
    budget = (expected + worst) / 2
    dag = load_dag(
        airflow_dags,
        "jc_between",
        f"""
        {DAG_OPEN}
            BatchJobOperator(
                task_id="by_expected", requests_path={str(source)!r}, destination={str(tmp_path / "e" / "out")!r},
                default_params=DEFAULTS, max_cost_usd={budget!r}, budget_basis="expected", poll_interval=0.2,
            )
            BatchJobOperator(
                task_id="by_worst_case", requests_path={str(source)!r}, destination={str(tmp_path / "w" / "out")!r},
                default_params=DEFAULTS, max_cost_usd={budget!r}, budget_basis="worst_case", poll_interval=0.2,
                retries=1, retry_delay=timedelta(seconds=0),
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"by_expected": "success", "by_worst_case": "failed"}
    assert try_numbers(dag_run)["by_worst_case"] == 1
    assert emulator.stats()["batches_created"] == 1  # only the job judged by its expected cost paid
    manifest = json.loads((tmp_path / "e" / "out" / "_manifest.json").read_text())
    assert manifest["lines"] == 6
    assert not (tmp_path / "w" / "out" / "_manifest.json").exists()


def test_a_budget_equal_to_the_estimate_is_within_budget(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source = prompts(tmp_path)
    estimate = dry_run_estimate(airflow_dags, "jc_equal_dry", source, tmp_path)
    dag = load_dag(
        airflow_dags,
        "jc_equal",
        f"""
        {DAG_OPEN}
            BatchJobOperator(
                task_id="job", requests_path={str(source)!r}, destination={str(tmp_path / "out")!r},
                default_params=DEFAULTS, max_cost_usd={estimate["worst_case_cost_usd"]!r},
                budget_basis="worst_case", poll_interval=0.2,
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"job": "success"}
    assert emulator.stats()["batches_created"] == 1
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["estimate"]["worst_case_cost_usd"] == estimate["worst_case_cost_usd"]


def test_a_model_missing_from_the_price_table_fails_a_budgeted_job_before_paying(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path, capsys: Any
) -> None:
    source = prompts(tmp_path)
    dag = load_dag(
        airflow_dags,
        "jc_no_price",
        f"""
        {DAG_OPEN}
            BatchJobOperator(
                task_id="job", requests_path={str(source)!r}, destination={str(tmp_path / "out")!r},
                default_params=DEFAULTS, max_cost_usd=100.0, poll_interval=0.2,
                price_table={{"claude-sonnet-4-5": {{"input": 3.0, "output": 15.0}}}},
                retries=1, retry_delay=timedelta(seconds=0),
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"job": "failed"}
    assert try_numbers(dag_run) == {"job": 1}
    assert emulator.stats()["batches_created"] == 0
    logs = capsys.readouterr().out
    assert f"no price for model(s) {MODEL} in the price table" in logs
    assert "price_table=" in logs and "nothing was sent" in logs


@pytest.mark.parametrize("check_models", [True, False])
def test_an_unknown_model_fails_before_paying_unless_the_check_is_off(
    check_models: bool,
    airflow_dags: Path,
    emulator: EmulatorHandle,
    anthropix_conn_env: str,
    tmp_path: Path,
    capsys: Any,
) -> None:
    # A made-up name the emulator's model list does not have; priced, so only the model check can stop it.
    model = "claude-haiku-4-5-typo"
    assert model not in emulator_model_names()
    source = prompts(tmp_path)
    summary_file = tmp_path / "summary.json"
    dag = load_dag(
        airflow_dags,
        f"jc_unknown_model_{check_models}",
        f"""
        {DAG_OPEN}
            job = BatchJobOperator(
                task_id="job", requests_path={str(source)!r}, destination={str(tmp_path / "out")!r},
                default_params={{"model": {model!r}, "max_tokens": 50}}, max_cost_usd=100.0, dry_run=True,
                check_models={check_models!r}, retries=1, retry_delay=timedelta(seconds=0),
            )
            record({str(summary_file)!r}, job.output)
        """,
    )
    dag_run = dag.test()
    assert emulator.stats()["batches_created"] == 0
    if check_models:
        assert states(dag_run) == {"job": "failed", "record": "upstream_failed"}
        assert try_numbers(dag_run)["job"] == 1
        logs = capsys.readouterr().out
        assert f"unknown model(s) '{model}'" in logs and "check_models=False" in logs
        assert emulator.stats()["calls"].get("models", 0) >= 1
    else:
        assert states(dag_run) == {"job": "success", "record": "success"}
        assert emulator.stats()["calls"].get("models", 0) == 0  # not asked at all
        summary = json.loads(summary_file.read_text())
        assert summary["dry_run"] is True and set(summary["estimate"]["by_model"]) == {model}


def emulator_model_names() -> set[str]:
    from airflow_provider_anthropix.emulator.models import MODELS

    return {name for m in MODELS for name in (m.id, *m.aliases)}


# -- the same controls on CreateBatchOperator ----------------------------------------------------------
# (tests/integration/operators/test_create_cost.py covers its budget below the worst case, its dry run's skip and
# an unknown model; these add the estimate's XCom, the basis, the equal edge, a missing price and
# check_models=False, in real DAG runs.)


def create_dry_run_estimate(dags: Path, dag_id: str, source: Path, folder: Path) -> dict[str, Any]:
    """The estimate a dry-run create pushes (XCom key ``estimate``); the create itself is skipped."""
    estimate_file = folder / f"{dag_id}.json"
    dag = load_dag(
        dags,
        dag_id,
        f"""
        {DAG_OPEN}
            create = CreateBatchOperator(
                task_id="create", requests_path={str(source)!r}, default_params=DEFAULTS, dry_run=True,
            )
            create >> record_estimate({str(estimate_file)!r}, "create")
        """,
    )
    assert states(dag.test()) == {"create": "skipped", "record_estimate": "success"}
    estimate: dict[str, Any] = json.loads(estimate_file.read_text())
    return estimate


def test_create_dry_run_skips_sends_nothing_and_pushes_the_estimate(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source = prompts(tmp_path, 5)
    estimate = create_dry_run_estimate(airflow_dags, "cc_dry_run", source, tmp_path)
    assert emulator.stats()["batches_created"] == 0
    assert emulator.stats()["calls"].get("create", 0) == 0
    assert estimate["requests"] == 5 and estimate["sampled"] == 5
    assert estimate["output_tokens_worst_case"] == 5 * 400
    assert 0 < estimate["expected_cost_usd"] < estimate["worst_case_cost_usd"]


def test_create_budget_between_expected_and_worst_case_depends_on_the_basis(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source = prompts(tmp_path)
    estimate = create_dry_run_estimate(airflow_dags, "cc_between_dry", source, tmp_path)
    budget = (estimate["expected_cost_usd"] + estimate["worst_case_cost_usd"]) / 2
    dag = load_dag(
        airflow_dags,
        "cc_between",
        f"""
        {DAG_OPEN}
            CreateBatchOperator(
                task_id="by_expected", requests_path={str(source)!r}, default_params=DEFAULTS,
                max_cost_usd={budget!r}, budget_basis="expected",
            )
            CreateBatchOperator(
                task_id="by_worst_case", requests_path={str(source)!r}, default_params=DEFAULTS,
                max_cost_usd={budget!r}, budget_basis="worst_case", retries=1, retry_delay=timedelta(seconds=0),
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"by_expected": "success", "by_worst_case": "failed"}
    assert try_numbers(dag_run)["by_worst_case"] == 1
    assert emulator.stats()["batches_created"] == 1


def test_create_budget_equal_to_the_estimate_is_within_budget(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source = prompts(tmp_path)
    estimate = create_dry_run_estimate(airflow_dags, "cc_equal_dry", source, tmp_path)
    dag = load_dag(
        airflow_dags,
        "cc_equal",
        f"""
        {DAG_OPEN}
            CreateBatchOperator(
                task_id="by_worst_case", requests_path={str(source)!r}, default_params=DEFAULTS,
                max_cost_usd={estimate["worst_case_cost_usd"]!r}, budget_basis="worst_case",
            )
            CreateBatchOperator(
                task_id="by_expected", requests_path={str(source)!r}, default_params=DEFAULTS,
                max_cost_usd={estimate["expected_cost_usd"]!r}, budget_basis="expected",
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"by_worst_case": "success", "by_expected": "success"}
    assert emulator.stats()["batches_created"] == 2


def test_create_model_missing_from_the_price_table_fails_a_budgeted_create_before_paying(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path, capsys: Any
) -> None:
    source = prompts(tmp_path)
    dag = load_dag(
        airflow_dags,
        "cc_no_price",
        f"""
        {DAG_OPEN}
            CreateBatchOperator(
                task_id="create", requests_path={str(source)!r}, default_params=DEFAULTS, max_cost_usd=100.0,
                price_table={{"claude-sonnet-4-5": {{"input": 3.0, "output": 15.0}}}},
                retries=1, retry_delay=timedelta(seconds=0),
            )
        """,
    )
    dag_run = dag.test()
    assert states(dag_run) == {"create": "failed"}
    assert try_numbers(dag_run) == {"create": 1}
    assert emulator.stats()["batches_created"] == 0
    logs = capsys.readouterr().out
    assert f"no price for model(s) {MODEL} in the price table" in logs
    assert "price_table=" in logs and "nothing was sent" in logs


@pytest.mark.parametrize("check_models", [True, False])
def test_create_unknown_model_fails_before_paying_unless_the_check_is_off(
    check_models: bool,
    airflow_dags: Path,
    emulator: EmulatorHandle,
    anthropix_conn_env: str,
    tmp_path: Path,
    capsys: Any,
) -> None:
    model = "claude-haiku-4-5-typo"  # priced by its prefix: only the model check can stop it
    assert model not in emulator_model_names()
    source = prompts(tmp_path)
    dag = load_dag(
        airflow_dags,
        f"cc_unknown_model_{check_models}",
        f"""
        {DAG_OPEN}
            CreateBatchOperator(
                task_id="create", requests_path={str(source)!r}, default_params={{"model": {model!r}, "max_tokens": 50}},
                max_cost_usd=100.0, dry_run=True, check_models={check_models!r},
                retries=1, retry_delay=timedelta(seconds=0),
            )
        """,
    )
    dag_run = dag.test()
    assert emulator.stats()["batches_created"] == 0
    if check_models:
        assert states(dag_run) == {"create": "failed"}
        assert try_numbers(dag_run) == {"create": 1}
        logs = capsys.readouterr().out
        assert f"unknown model(s) '{model}'" in logs and "check_models=False" in logs
    else:
        assert states(dag_run) == {"create": "skipped"}  # the dry run's end: estimated, nothing sent
        assert emulator.stats()["calls"].get("models", 0) == 0

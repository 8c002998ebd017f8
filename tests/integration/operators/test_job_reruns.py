"""BatchJobOperator across DAG runs (``dag.test()``, SQLite, the emulator): a re-run never pays twice.

A job's identity is its destination, input and plan options, not the DAG run: every test here
runs the same DAG more than once, as a manual re-run, a backfill or a cleared and deleted run
would, and counts the batches the emulator created.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow_provider_anthropix.emulator import EmulatorHandle
from tests.integration.operators.test_job import load_dag, read_lines
from tests.support.airflow import DAG_OPEN, states, write_prompts

IDS = [f"r-{i:02d}" for i in range(12)]


def job_dag(airflow_dags: Path, dag_id: str, source: Path, out: Path, **arguments: Any) -> Any:
    arguments = {"max_requests_per_batch": 5, "retries": 0, **arguments}
    extra = "".join(f", {name}={value!r}" for name, value in arguments.items())
    return load_dag(
        airflow_dags,
        dag_id,
        f"""
        {DAG_OPEN}
            BatchJobOperator(
                task_id="job", requests_path={str(source)!r}, destination={str(out)!r},
                default_params=DEFAULTS, poll_interval=0.2{extra},
            )
        """,
    )


def work_folders(out: Path) -> list[str]:
    folder = out / "_anthropix_job"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_second_run_for_the_same_input_creates_nothing_and_lands_the_same_bytes(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source, out = tmp_path / "prompts.jsonl", tmp_path / "out"
    write_prompts(source, IDS)
    dag = job_dag(airflow_dags, "rerun_same", source, out)
    assert states(dag.test()) == {"job": "success"}
    first = (out / "results.jsonl").read_bytes()
    assert emulator.stats()["batches_created"] == 3
    assert states(dag.test()) == {"job": "success"}
    assert emulator.stats()["batches_created"] == 3
    assert (out / "results.jsonl").read_bytes() == first
    # The job's record stays (a few KB); its shard files are gone.
    (key,) = work_folders(out)
    assert sorted(p.name for p in (out / "_anthropix_job" / key).rglob("*") if p.is_file()) == ["job.json"]


def test_added_requests_are_a_new_job_that_lands_exactly_the_new_set(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source, out = tmp_path / "prompts.jsonl", tmp_path / "out"
    write_prompts(source, IDS)
    dag = job_dag(airflow_dags, "rerun_grown", source, out)
    assert states(dag.test()) == {"job": "success"}
    more = [*IDS, "r-90", "r-91"]
    write_prompts(source, more)
    assert states(dag.test()) == {"job": "success"}
    assert sorted(line["custom_id"] for line in read_lines(out)) == more
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["job"]["total_requests"] == len(more)
    assert emulator.stats()["batches_created"] == 3 + 3
    assert len(work_folders(out)) == 1


def test_changed_options_are_a_new_job_and_the_earlier_jobs_folder_is_swept(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source, out = tmp_path / "prompts.jsonl", tmp_path / "out"
    write_prompts(source, IDS)
    assert states(job_dag(airflow_dags, "rerun_opts_a", source, out).test()) == {"job": "success"}
    (first,) = work_folders(out)
    dag_b = job_dag(airflow_dags, "rerun_opts_b", source, out, max_requests_per_batch=4)
    assert states(dag_b.test()) == {"job": "success"}
    assert emulator.stats()["batches_created"] == 3 + 3
    assert first not in work_folders(out) and len(work_folders(out)) == 1
    assert sorted(line["custom_id"] for line in read_lines(out)) == IDS


def test_a_job_key_per_run_makes_one_job_per_run(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source, out = tmp_path / "prompts.jsonl", tmp_path / "out"
    write_prompts(source, IDS)
    dag = job_dag(airflow_dags, "rerun_keyed", source, out, job_key="{{ run_id }}")
    assert states(dag.test()) == {"job": "success"}
    assert states(dag.test()) == {"job": "success"}
    assert emulator.stats()["batches_created"] == 6
    assert len(work_folders(out)) == 1  # the first run's folder was swept after the second exported


def test_a_dry_run_leaves_no_working_folder(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source, out = tmp_path / "prompts.jsonl", tmp_path / "out"
    write_prompts(source, IDS)
    assert states(job_dag(airflow_dags, "rerun_dry", source, out, dry_run=True).test()) == {"job": "success"}
    assert emulator.stats()["batches_created"] == 0
    assert work_folders(out) == []


def test_a_dry_run_of_a_job_that_already_ran_never_resumes_it(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source, out = tmp_path / "prompts.jsonl", tmp_path / "out"
    write_prompts(source, IDS)
    dag = job_dag(airflow_dags, "rerun_then_dry", source, out, max_batches_in_flight=1)
    dag_run = dag.test()
    assert states(dag_run) == {"job": "success"}
    folders, created = work_folders(out), emulator.stats()["batches_created"]
    manifest = (out / "_manifest.json").read_bytes()
    dry = job_dag(airflow_dags, "rerun_then_dry", source, out, max_batches_in_flight=1, dry_run=True).test()
    assert states(dry) == {"job": "success"}
    (ti,) = dry.get_task_instances()
    assert ti.xcom_pull(task_ids="job")["dry_run"] is True
    assert emulator.stats()["batches_created"] == created
    assert work_folders(out) == folders
    assert (out / "_manifest.json").read_bytes() == manifest


def test_an_unreadable_journal_fails_the_task_for_good_and_an_orphan_beside_it_is_harmless(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source, out, work = tmp_path / "prompts.jsonl", tmp_path / "out", tmp_path / "work"
    write_prompts(source, IDS)
    work.mkdir()
    (work / "job.json").write_text("{ not json")
    dag = job_dag(airflow_dags, "rerun_broken", source, out, work_prefix=str(work), retries=2)
    dag_run = dag.test()
    assert states(dag_run) == {"job": "failed"}
    (ti,) = dag_run.get_task_instances()
    assert ti.try_number == 1, "a journal that cannot be read is not retried"
    assert emulator.stats()["batches_created"] == 0
    # An orphaned, unreadable journal in another job's folder never breaks a run.
    orphan = out / "_anthropix_job" / "0123456789abcdef01234567"
    orphan.mkdir(parents=True)
    (orphan / "job.json").write_text("[]")
    assert states(job_dag(airflow_dags, "rerun_orphan", source, out).test()) == {"job": "success"}
    assert (orphan / "job.json").exists()


def test_max_cost_usd_caps_the_whole_job_a_retry_round_over_it_is_not_sent(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    source, out = tmp_path / "prompts.jsonl", tmp_path / "out"
    flaky = {IDS[3]: "[[emulator:errored-once:api_error]]", IDS[7]: "[[emulator:errored-once:api_error]]"}
    write_prompts(source, IDS, flaky)
    dry_run = job_dag(airflow_dags, "budget_dry", source, tmp_path / "dry", dry_run=True).test()
    (ti,) = dry_run.get_task_instances()
    expected = ti.xcom_pull(task_ids="job")["estimate"]["expected_cost_usd"]
    # Exactly the first round's expected cost: the first round passes; the answers cost more than
    # expected (the emulator answers at max_tokens), so the retry round would go over.
    dag = job_dag(airflow_dags, "budget_round", source, out, max_cost_usd=expected, budget_basis="expected")
    assert states(dag.test()) == {"job": "failed"}
    assert emulator.stats()["batches_created"] == 3
    manifest = json.loads((out / "_manifest.json").read_text())
    not_sent = manifest["job"]["not_sent"]
    assert not_sent["requests"] == 2 and not_sent["why"] == "max_cost_usd"
    assert not_sent["spent_usd"] + not_sent["round_estimate_usd"] > not_sent["budget_usd"] == expected
    # The results landed first: every request once, the two not sent again with their errored answer.
    lines = {line["custom_id"]: line["result"]["type"] for line in read_lines(out)}
    assert sorted(lines) == IDS and lines[IDS[3]] == lines[IDS[7]] == "errored"
    # A larger budget, the same job: the round is sent now, and only it.
    dag = job_dag(airflow_dags, "budget_round", source, out, max_cost_usd=1.0, budget_basis="expected")
    assert states(dag.test()) == {"job": "success"}
    assert emulator.stats()["batches_created"] == 4
    assert {line["result"]["type"] for line in read_lines(out)} == {"succeeded"}

"""The batch job's runner on its own: an in-memory API, its files in a local folder, no Airflow task.

Each ``advance()`` is one wake-up of the job: it plans, creates what fits, and answers
``Wait`` or ``Done``. The in-memory API (tests/support/fake_api.py) ends batches when a test
says so and decides each request's outcome per attempt, so a retry round, a permanent error,
a crash between a create and its record, or a budget stop are each a few lines. The same
runner against the emulator, with a crash at every journal write, is in
tests/integration/workflow/test_job.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.io.export import ExportOptions
from airflow_provider_anthropix.io.job_files import JobWorkspace
from airflow_provider_anthropix.workflow.job import (
    Done,
    JobError,
    JobRunner,
    JobSettings,
    PlanOptions,
    RoundBudget,
    Wait,
)
from airflow_provider_anthropix.workflow.ledger import RecoverySettings
from tests.support.airflow import write_prompts
from tests.support.fake_api import Clock, Crash, FakeBatches

IDS = [f"c-{i:02d}" for i in range(23)]  # 3 shards of at most 10
PLAN = PlanOptions(
    default_params={"model": "claude-haiku-4-5", "max_tokens": 16},
    max_requests_per_batch=10,
    max_bytes_per_batch=1 << 20,
)


class Job:
    """One job's input, working folder, destination and API; ``runner()`` is one wake-up's runner."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.tmp = tmp
        self.clock = Clock()
        self.api = FakeBatches(now=self.clock)
        self.input = tmp / "prompts.jsonl"
        write_prompts(self.input, IDS)
        self.out = tmp / "out"
        self.work = tmp / "work"
        settings.setdefault("max_errored_ratio", None)
        self.settings = JobSettings(recovery=RecoverySettings(checks=1, interval=0.0), plan=PLAN, **settings)

    def runner(self, **hooks: Any) -> JobRunner:
        workspace = JobWorkspace(
            ObjectStoragePath(f"file://{self.work}"),
            requests_path=ObjectStoragePath(f"file://{self.input}"),
            destination=ObjectStoragePath(f"file://{self.out}"),
            plan=PLAN,
            export_options=ExportOptions(pipeline=False),
        )
        return JobRunner(
            self.api,
            workspace,
            self.settings,
            key="job",
            identity={"dag_id": "d", "task_id": "t"},
            now=self.clock,
            sleep=lambda _: None,
            **hooks,
        )

    def run(self, runner: JobRunner | None = None, *, wakes: int = 20) -> Done:
        """Wake the job until it is done, ending every batch in flight between wake-ups."""
        runner = runner or self.runner()
        for _ in range(wakes):
            step = runner.advance()
            if isinstance(step, Done):
                return step
            self.api.end(*step.batch_ids)
        raise AssertionError("the job did not finish")

    def journal(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.work / "job.json").read_text())
        return loaded

    def results(self) -> dict[str, str]:
        lines = (self.out / "results.jsonl").read_text().splitlines()
        outcomes = {json.loads(line)["custom_id"]: json.loads(line)["result"]["type"] for line in lines}
        assert len(outcomes) == len(lines), "a custom_id is published twice"
        return outcomes


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path)


@pytest.mark.smoke
def test_it_plans_creates_waits_and_is_done(job: Job) -> None:
    runner = job.runner()
    step = runner.advance()
    assert isinstance(step, Wait) and step.wait_for == "all"
    assert step.batch_ids == [b.id for b in job.api.made] and len(step.batch_ids) == 3
    [plan] = job.journal()["rounds"]
    assert [shard["requests"] for shard in plan["shards"]] == [10, 10, 3]
    assert [len(sent) for sent in job.api.sent] == [10, 10, 3]
    again = runner.advance()  # woken while the batches are still processing
    assert isinstance(again, Wait) and again.batch_ids == step.batch_ids and len(job.api.sent) == 3
    job.api.end()
    done = runner.advance()
    assert isinstance(done, Done) and done.summary["lines"] == 23
    assert job.results() == dict.fromkeys(IDS, "succeeded")
    assert json.loads((job.out / "_manifest.json").read_text())["job"]["batches"] == 3


def test_no_more_than_max_batches_in_flight(tmp_path: Path) -> None:
    job = Job(tmp_path, max_batches_in_flight=2)
    runner = job.runner()
    step = runner.advance()
    assert isinstance(step, Wait) and len(step.batch_ids) == 2 and step.wait_for == "any"
    job.api.end(step.batch_ids[0])
    step = runner.advance()  # one ended: room for the third, the last
    assert isinstance(step, Wait) and len(step.batch_ids) == 2 and step.wait_for == "all"
    job.run(runner)
    assert job.api.most_in_flight == 2 and len(job.api.made) == 3


def test_a_retry_round_sends_the_retryable_only_and_keeps_their_last_answer(job: Job) -> None:
    job.api.outcomes = {
        "c-04": ["errored:overloaded_error", "succeeded"],
        "c-12": ["expired", "succeeded"],
        "c-15": ["errored:invalid_request_error", "succeeded"],  # would succeed, but is never sent again
    }
    done = job.run()
    assert sorted(job.api.sent[3]) == ["c-04", "c-12"] and len(job.api.sent) == 4
    assert job.results() == {**dict.fromkeys(IDS, "succeeded"), "c-15": "errored"}
    manifest = json.loads((job.out / "_manifest.json").read_text())
    assert manifest["job"]["not_retried_errors"] == {"invalid_request_error": 1}
    assert manifest["job"]["retried"][0]["reasons"] == {"errored": 1, "expired": 1}
    assert done.summary["job"]["rounds"] == 2


def test_retry_rounds_stop_at_max_retry_rounds(tmp_path: Path) -> None:
    job = Job(tmp_path, max_retry_rounds=2)
    job.api.outcomes = {"c-04": ["errored:api_error"]}  # errors every time
    job.run()
    assert [ids for ids in job.api.sent if "c-04" in ids][1:] == [["c-04"], ["c-04"]]
    assert job.results()["c-04"] == "errored" and len(job.journal()["rounds"]) == 3


def test_a_crash_between_create_and_record_resumes_from_the_journal_without_a_second_batch(job: Job) -> None:
    job.api.next_creates = ["ok", "crash"]  # the API makes shard 2's batch, the worker dies before recording it
    with pytest.raises(Crash):
        job.runner().advance()
    shards = job.journal()["rounds"][0]["shards"]
    assert shards[1]["batch_id"] is None and shards[1]["attempt"]["request_count"] == 10
    step = job.runner().advance()  # a new worker, from the journal alone
    assert isinstance(step, Wait) and step.batch_ids == [b.id for b in job.api.made]
    assert len(job.api.made) == 3 and len(job.api.sent) == 3  # shard 2 adopted, shard 3 created
    job.run()
    assert job.results() == dict.fromkeys(IDS, "succeeded")


def test_a_declined_create_waits_for_the_batches_in_flight(job: Job) -> None:
    job.api.next_creates = ["ok", "decline"]
    step = job.runner().advance()
    assert isinstance(step, Wait) and len(step.batch_ids) == 1 and step.wait_for == "any"
    job.run()
    assert len(job.api.made) == 3


def budget(allowed: bool) -> Callable[..., RoundBudget]:
    return lambda state, round_: RoundBudget(
        allowed=allowed, spent_usd=0.01, round_estimate_usd=0.02, budget_usd=0.02, basis="worst_case"
    )


def test_the_budget_stops_a_retry_round_lands_the_results_and_a_larger_one_sends_it(job: Job) -> None:
    job.api.outcomes = {"c-04": ["errored:api_error", "succeeded"]}
    with pytest.raises(JobError, match=r"1 request\(s\) \(1 errored\) were not sent again in round 1") as info:
        job.run(job.runner(before_retry_round=budget(False)))
    assert not info.value.retryable
    assert len(job.api.sent) == 3 and job.results()["c-04"] == "errored"
    assert (job.work / "round-1" / "not_sent_ids.txt").read_text().split() == ["c-04"]
    job.run(job.runner(before_retry_round=budget(True)))  # cleared with a larger budget
    assert job.api.sent[3:] == [["c-04"]]
    assert job.results() == dict.fromkeys(IDS, "succeeded")


def test_a_first_create_refused_by_the_estimate_sends_nothing(job: Job) -> None:
    def over_budget(state: Any) -> dict[str, Any]:
        raise JobError("over max_cost_usd", retryable=False)

    with pytest.raises(JobError, match="over max_cost_usd"):
        job.runner(before_first_create=over_budget).advance()
    assert job.api.sent == [] and job.journal()["rounds"][0]["shards"][0]["batch_id"] is None

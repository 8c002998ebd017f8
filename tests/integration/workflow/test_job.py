"""The batch job's state machine on its own: no DAG, no task runner; the real client, emulator and files.

The crash sweep stops the job at every durable step it takes (each write of its journal, in
turn), then resumes it from the journal with a fresh runner, as a new worker would: no shard
may be created twice, no result lost, and the merged output must be the one an undisturbed
job publishes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.workflow.job import JobError, JobSettings, Wait
from tests.support.airflow import write_prompts
from tests.support.job import Crash, JobHarness


@pytest.fixture
def harness(emulator: EmulatorHandle, emulator_api_key: str, tmp_path: Path) -> JobHarness:
    return JobHarness(emulator, emulator_api_key, tmp_path, max_retry_rounds=1, max_errored_ratio=None)


IDS = [f"c-{i:02d}" for i in range(23)]
MARKERS = {"c-04": "[[emulator:errored:api_error]]", "c-15": "[[emulator:errored:invalid_request_error]]"}


@pytest.mark.smoke
def test_an_undisturbed_job_sends_each_shard_once_and_merges_one_line_per_request(harness: JobHarness) -> None:
    write_prompts(harness.input, IDS, MARKERS)
    runner, _ = harness.runner()
    done = harness.run(runner)
    ids = sorted(json.loads(line)["custom_id"] for line in harness.lines())
    assert ids == IDS
    # 23 requests by 10: three batches, then c-04 (api_error) once more; invalid_request_error is never retried.
    assert harness.emulator.stats()["batches_created"] == 4
    assert done.summary["job"]["rounds"] == 2
    manifest = json.loads((harness.destination / "_manifest.json").read_text())
    assert manifest["job"]["not_retried_errors"] == {"invalid_request_error": 1}
    assert manifest["job"]["retried"] == [
        {"round": 1, "requests": 1, "reasons": {"errored": 1}, "outcome": {**_zero(), "errored": 1}}
    ]
    assert not list((harness.work / "round-0").glob("*.jsonl")), "shard files are removed after the export"


def _zero() -> dict[str, int]:
    return {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}


def test_a_crash_at_every_step_resumes_without_a_second_batch_or_a_lost_result(
    emulator: EmulatorHandle, emulator_api_key: str, tmp_path: Path
) -> None:
    reference = JobHarness(emulator, emulator_api_key, tmp_path / "reference", max_retry_rounds=1)
    reference.tmp.mkdir()
    write_prompts(reference.input, IDS, {"c-04": "[[emulator:errored:api_error]]"})
    runner, workspace = reference.runner()
    with pytest.raises(JobError, match="errored ratio"):
        reference.run(runner)  # one request errors in both rounds; max_errored_ratio=0 fails after landing
    total_saves = workspace.saves
    expected_lines = sorted(json.loads(line)["custom_id"] for line in reference.lines())
    assert total_saves > 10

    for crash_at in range(1, total_saves + 1):
        emulator.reset()
        case = JobHarness(emulator, emulator_api_key, tmp_path / f"crash-{crash_at}", max_retry_rounds=1)
        case.tmp.mkdir()
        write_prompts(case.input, IDS, {"c-04": "[[emulator:errored:api_error]]"})
        runner, _ = case.runner(crash_at=crash_at)
        with pytest.raises((Crash, JobError)):
            case.run(runner)
        resumed, _ = case.runner()
        with pytest.raises(JobError, match="errored ratio"):
            case.run(resumed)
        assert emulator.stats()["batches_created"] == 4, f"crash before journal write {crash_at}"
        assert sorted(json.loads(line)["custom_id"] for line in case.lines()) == expected_lines


@pytest.mark.smoke
def test_a_crash_during_the_export_publishes_nothing_and_the_resumed_job_exports_the_same_batches(
    harness: JobHarness,
) -> None:
    write_prompts(harness.input, IDS)
    runner, _ = harness.runner(crash_in_export=True)
    with pytest.raises(Crash):
        harness.run(runner)
    assert not (harness.destination / "_manifest.json").exists()
    assert not (harness.destination / "results.jsonl").exists()
    resumed, _ = harness.runner()
    harness.run(resumed)
    assert len(harness.lines()) == len(IDS)
    assert harness.emulator.stats()["batches_created"] == 3


@pytest.mark.smoke
def test_two_equal_shards_whose_answers_are_lost_are_each_adopted_once(harness: JobHarness) -> None:
    """Both creates are carried out by the API and their answers dropped: recovery must not confuse them."""
    write_prompts(harness.input, IDS[:20])  # two shards of exactly 10
    harness.emulator.add_fault("drop", endpoint="create", count=2)
    runner, _ = harness.runner()
    done = harness.run(runner)
    assert harness.emulator.stats()["batches_created"] == 2
    batch_ids = [
        b["batch_id"] for b in json.loads((harness.destination / "_manifest.json").read_text())["job"]["batch_list"]
    ]
    assert len(set(batch_ids)) == 2
    assert done.summary["lines"] == 20


def test_a_finished_job_cleared_exports_again_from_the_same_batches(harness: JobHarness) -> None:
    write_prompts(harness.input, IDS)
    runner, _ = harness.runner()
    harness.run(runner)
    first = sorted(harness.lines())
    again, _ = harness.runner()
    harness.run(again)
    assert sorted(harness.lines()) == first
    assert harness.emulator.stats()["batches_created"] == 3


def test_a_changed_input_under_a_given_job_key_is_refused_instead_of_mixed(harness: JobHarness) -> None:
    harness.settings = replace(harness.settings, fixed_identity=True)
    write_prompts(harness.input, IDS)
    runner, _ = harness.runner()
    assert isinstance(runner.advance(), Wait)
    write_prompts(harness.input, [*IDS, "c-99"])
    resumed, _ = harness.runner()
    with pytest.raises(JobError, match="input or the options changed") as info:
        resumed.advance()
    assert not info.value.retryable


def test_a_changed_input_under_the_default_identity_is_a_new_job_that_replaces_the_results(
    harness: JobHarness, caplog: pytest.LogCaptureFixture
) -> None:
    write_prompts(harness.input, IDS)
    harness.run(harness.runner()[0])
    assert harness.emulator.stats()["batches_created"] == 3
    write_prompts(harness.input, [*IDS, "c-99"])
    with caplog.at_level("WARNING"):
        harness.run(harness.runner()[0])
    assert "The input changed since the job planned" in caplog.text
    assert "holds the results of an earlier job" in caplog.text
    assert sorted(json.loads(line)["custom_id"] for line in harness.lines()) == [*IDS, "c-99"]
    assert harness.emulator.stats()["batches_created"] == 6


def test_the_same_input_written_again_is_the_same_job(harness: JobHarness) -> None:
    write_prompts(harness.input, IDS)
    harness.run(harness.runner()[0])
    first = harness.lines()
    stamp = harness.input.stat().st_mtime_ns
    write_prompts(harness.input, IDS)  # the same bytes, a new modification time
    os.utime(harness.input, ns=(stamp + 10**9, stamp + 10**9))
    harness.run(harness.runner()[0])
    assert harness.emulator.stats()["batches_created"] == 3
    assert harness.lines() == first


def test_max_batches_in_flight_is_honoured(emulator: EmulatorHandle, emulator_api_key: str, tmp_path: Path) -> None:
    harness = JobHarness(emulator, emulator_api_key, tmp_path, max_batches_in_flight=2, max_requests_per_batch=5)
    write_prompts(harness.input, IDS)  # 5 shards
    runner, _ = harness.runner()
    step = runner.advance()
    assert isinstance(step, Wait)
    assert len(step.batch_ids) == 2 and step.wait_for == "any"
    assert emulator.stats()["batches_created"] == 2
    harness.run(runner)
    assert emulator.stats()["batches_created"] == 5


def test_the_deadline_is_kept_across_resumes(harness: JobHarness) -> None:
    write_prompts(harness.input, IDS)
    runner, _ = harness.runner()
    assert isinstance(runner.advance(), Wait)
    later, _ = harness.runner()
    later.now = lambda: pendulum.now("UTC").add(days=3)
    with pytest.raises(JobError, match="deadline") as info:
        later.advance()
    assert not info.value.retryable


def test_the_export_reads_the_results_the_round_end_kept_instead_of_downloading_them_again(
    harness: JobHarness,
) -> None:
    write_prompts(harness.input, IDS, MARKERS)
    runner, _ = harness.runner()
    done = harness.run(runner)
    # Batches 0 and 1 and the retry round's batch have errors: each is downloaded once, at its round's
    # end, and the export reads the kept copy; batch 2 has none and is downloaded once, by the export.
    assert harness.emulator.stats()["calls"]["results"] == 4
    assert done.summary["lines"] == len(IDS)
    assert sorted(json.loads(line)["custom_id"] for line in harness.lines()) == IDS
    assert not list((harness.work / "results").glob("*")), "the copies are removed after the export"


def test_a_kept_copy_that_is_gone_or_changed_is_downloaded_again(harness: JobHarness) -> None:
    write_prompts(harness.input, IDS, MARKERS)
    harness.settings = JobSettings(**{**harness.settings.__dict__, "keep_work_files": True})
    runner, _ = harness.runner()
    harness.run(runner)
    first = sorted(harness.lines())
    copies = sorted((harness.work / "results").glob("*.jsonl"))
    assert len(copies) == 3 and not list((harness.work / "results").glob("*.tmp"))
    copies[0].unlink()
    copies[1].write_bytes(copies[1].read_bytes()[:-10])  # not the size the journal recorded
    calls = harness.emulator.stats()["calls"]["results"]
    again, _ = harness.runner()
    harness.run(again)  # a cleared finished job exports again
    # The missing copy and batch 2 are downloaded, the third copy is read. The truncated copy is
    # found out when it has been read (its digest is checked as it streams, not by a second
    # read): nothing was published, and the export runs again with it downloaded, so the batch
    # whose copy was missing is downloaded twice.
    assert harness.emulator.stats()["calls"]["results"] == calls + 4
    assert sorted(harness.lines()) == first


def test_a_scan_that_breaks_off_keeps_no_partial_copy(harness: JobHarness) -> None:
    write_prompts(harness.input, IDS, MARKERS)
    runner, workspace = harness.runner()
    scan = workspace.scan_for_retries

    def breaking(batch_id: str, chunks: Iterable[bytes], **options: Any) -> Any:
        def first_chunk_then_crash() -> Iterable[bytes]:
            yield next(iter(chunks))
            raise Crash("killed during the round's scan")

        return scan(batch_id, first_chunk_then_crash(), **options)

    workspace.scan_for_retries = breaking  # type: ignore[method-assign]
    with pytest.raises(Crash):
        harness.run(runner)
    assert not list((harness.work / "results").glob("*"))
    resumed, _ = harness.runner()
    done = harness.run(resumed)
    assert done.summary["lines"] == len(IDS)

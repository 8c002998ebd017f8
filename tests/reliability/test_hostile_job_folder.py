"""A batch job's working folder is input from an untrusted store: every fact read back is checked first.

Each test plants what a hostile (or broken) store could hold, then runs the job on the real
client and emulator. The job must refuse, or derive / download again, before it pays twice,
publishes another job's results, or writes outside its folder. The folder-level tests run on a
local ``file://`` store and on ``s3://`` (the S3 API server on loopback).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api.digests import IdMismatch
from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.workflow.job import JobError, JournalError, Wait
from tests.support.airflow import write_prompts
from tests.support.job import JobHarness
from tests.support.s3 import BUCKET, CONN_ID

IDS = [f"c-{i:02d}" for i in range(23)]
OTHER_IDS = [f"x-{i:02d}" for i in range(23)]


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStoragePath | None:
    if request.param == "file":
        return None
    request.getfixturevalue("s3")
    return ObjectStoragePath(f"s3://{BUCKET}/hostile-{uuid.uuid4().hex[:8]}", conn_id=CONN_ID)


@pytest.fixture
def harness(
    emulator: EmulatorHandle, emulator_api_key: str, tmp_path: Path, store: ObjectStoragePath | None
) -> JobHarness:
    return JobHarness(emulator, emulator_api_key, tmp_path, store, max_retry_rounds=1, max_errored_ratio=None)


def created(harness: JobHarness) -> int:
    return int(harness.emulator.stats()["batches_created"])


def published(harness: JobHarness) -> bool:
    return (harness.destination_path / "results.jsonl").exists()


def test_a_journal_pairing_a_shard_with_another_jobs_batch_of_the_same_size_publishes_nothing(
    harness: JobHarness, emulator: EmulatorHandle, emulator_api_key: str, tmp_path: Path
) -> None:
    other = JobHarness(emulator, emulator_api_key, tmp_path / "other", max_retry_rounds=1, max_errored_ratio=None)
    other.input.parent.mkdir()
    write_prompts(other.input, OTHER_IDS)
    other.run(other.runner()[0])
    foreign = other.journal()["rounds"][0]["shards"][0]["batch_id"]

    write_prompts(harness.input, IDS)
    assert isinstance(harness.runner()[0].advance(), Wait)
    journal = harness.journal()
    journal["rounds"][0]["shards"][0]["batch_id"] = foreign  # the same 10 requests, other custom_ids
    harness.write_journal(journal)
    harness.emulator.advance(5)
    with pytest.raises((IdMismatch, JobError), match="not the shard's own set"):
        harness.run(harness.runner()[0])
    assert not published(harness)


def test_a_results_copy_with_one_custom_id_renamed_is_downloaded_again(harness: JobHarness) -> None:
    markers = {"c-04": "[[emulator:errored:api_error]]", "c-15": "[[emulator:errored:api_error]]"}
    write_prompts(harness.input, IDS, markers)
    harness.settings = type(harness.settings)(**{**harness.settings.__dict__, "keep_work_files": True})
    harness.run(harness.runner()[0])
    first = sorted(harness.lines())
    copy_name = harness.journal()["rounds"][0]["shards"][0]["results_copy"]
    copy = harness.work_path / copy_name
    data = copy.read_bytes()
    assert b'"c-05"' in data
    copy.write_bytes(data.replace(b'"c-05"', b'"c-95"'))  # the same size, a foreign id
    downloads = harness.emulator.stats()["calls"]["results"]
    harness.run(harness.runner()[0])  # a cleared, finished job exports again
    assert harness.emulator.stats()["calls"]["results"] > downloads
    assert sorted(harness.lines()) == first
    assert not any(b'"c-95"' in line for line in harness.lines())


def test_a_plan_naming_one_file_for_two_shards_is_refused_before_the_second_create(harness: JobHarness) -> None:
    harness.settings = type(harness.settings)(**{**harness.settings.__dict__, "max_batches_in_flight": 1})
    write_prompts(harness.input, IDS)
    assert isinstance(harness.runner()[0].advance(), Wait)
    assert created(harness) == 1
    journal = harness.journal()
    shards = journal["rounds"][0]["shards"]
    shards[1].update({k: shards[0][k] for k in ("name", "digest", "ids_digest", "requests", "body_bytes")})
    harness.write_journal(journal)
    harness.emulator.advance(5)
    with pytest.raises(JournalError, match=r"twice|names 'round-0/shard-00000.jsonl' as the file of round 0, shard 1"):
        harness.runner()[0].advance()
    assert created(harness) == 1


def test_a_plan_naming_one_batch_for_two_shards_is_refused(harness: JobHarness) -> None:
    write_prompts(harness.input, IDS)
    assert isinstance(harness.runner()[0].advance(), Wait)
    journal = harness.journal()
    shards = journal["rounds"][0]["shards"]
    shards[1]["batch_id"] = shards[0]["batch_id"]
    harness.write_journal(journal)
    with pytest.raises(JournalError, match=r"pairs batch .* with two shards"):
        harness.runner()[0].advance()


def test_a_changed_shard_file_is_derived_again_from_the_input_before_it_is_sent(harness: JobHarness) -> None:
    harness.settings = type(harness.settings)(**{**harness.settings.__dict__, "max_batches_in_flight": 1})
    write_prompts(harness.input, IDS)
    assert isinstance(harness.runner()[0].advance(), Wait)
    shard = harness.work_path / "round-0/shard-00001.jsonl"
    planted = shard.read_bytes().replace(b"c-1", b"c-9")  # other requests, the same size
    shard.write_bytes(planted)
    harness.run(harness.runner()[0])
    assert sorted(json.loads(line)["custom_id"] for line in harness.lines()) == IDS
    assert created(harness) == 3


BROKEN_JOURNALS: dict[str, Any] = {
    "empty": b"",
    "not JSON": b'{"rounds": [',
    "a JSON list": [1, 2],
    "no rounds": {"rounds": []},
    "a bad deadline": {"deadline": "the day after tomorrow"},
    "a results copy naming a shard": {"results_copy": "round-0/shard-00000.jsonl"},
    "another version": {"version": 1},
    "a batch id that is a path": {"batch_id": "../../v1/messages/batches/x"},
    "a shard outside the folder": {"name": "../../elsewhere.jsonl"},
}


def _break(journal: dict[str, Any], how: Any) -> Any:
    if not isinstance(how, dict):
        return how
    if "rounds" in how or "deadline" in how or "version" in how:
        return {**journal, **how}
    shard = journal["rounds"][0]["shards"][0]
    shard.update(how)
    if "results_copy" in how:
        shard["results_copy_digest"] = "0" * 64
    return journal


@pytest.mark.parametrize("kind", list(BROKEN_JOURNALS))
def test_a_journal_that_cannot_be_trusted_fails_for_good_naming_the_file_and_the_fix(
    harness: JobHarness, kind: str
) -> None:
    write_prompts(harness.input, IDS)
    assert isinstance(harness.runner()[0].advance(), Wait)
    before = created(harness)
    harness.write_journal(_break(harness.journal(), BROKEN_JOURNALS[kind]))
    with pytest.raises(JournalError) as info:
        harness.runner()[0].advance()
    message = str(info.value)
    assert not info.value.retryable
    assert "job.json" in message and "remove the working folder" in message
    assert created(harness) == before


def test_a_symlink_in_a_local_working_folder_is_refused_before_anything_is_written(
    emulator: EmulatorHandle, emulator_api_key: str, tmp_path: Path
) -> None:
    harness = JobHarness(emulator, emulator_api_key, tmp_path, max_errored_ratio=None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    precious = elsewhere / "shard-00000.jsonl"
    precious.write_text("not the job's\n")
    harness.work.mkdir()
    (harness.work / "round-0").symlink_to(elsewhere, target_is_directory=True)
    write_prompts(harness.input, IDS)
    with pytest.raises(JobError, match=r"symbolic link, .*round-0") as info:
        harness.runner()[0].advance()
    assert not info.value.retryable
    assert precious.read_text() == "not the job's\n"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["shard-00000.jsonl"]
    assert created(harness) == 0


def test_a_shard_changed_before_its_round_end_is_derived_again_before_the_retry_round_copies_from_it(
    harness: JobHarness,
) -> None:
    write_prompts(harness.input, IDS, {"c-04": "[[emulator:errored-once:api_error]]"})
    assert isinstance(harness.runner()[0].advance(), Wait)
    shard = harness.work_path / "round-0/shard-00000.jsonl"
    shard.write_bytes(shard.read_bytes().replace(b"question c-04", b"question c-44"))
    harness.run(harness.runner()[0])
    retried = harness.journal()["rounds"][1]["shards"][0]
    assert retried["requests"] == 1
    lines = {json.loads(line)["custom_id"]: json.loads(line) for line in harness.lines()}
    assert sorted(lines) == IDS and lines["c-04"]["result"]["type"] == "succeeded"
    assert "c-44" not in json.dumps(lines["c-04"])
    assert created(harness) == 4

"""s3:// end to end: the operator writes to a real S3 API (moto in server mode on loopback).

The store is reached through an Airflow connection of type ``aws`` (from the environment)
whose extras point ``endpoint_url`` at the local server, exactly as a user would point
Airflow at MinIO or another S3-compatible store.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_anthropix.api import MessageBatch
from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.io import read_manifest
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from tests.support.emulator import ended_batch, served_bytes
from tests.support.s3 import BUCKET, CONN_ID


def keys(s3: Any, prefix: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"][len(prefix) :] for item in listing.get("Contents", []))


def body(s3: Any, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


@pytest.fixture
def batch(emulator: EmulatorHandle, anthropix_conn_env: str) -> MessageBatch:
    return ended_batch(AnthropixHook(anthropix_conn_env), emulator, 1_200)


def fetch(batch_id: str, destination: str, **kwargs: Any) -> dict[str, Any]:
    operator = FetchBatchResultsOperator(
        task_id="fetch", batch_id=batch_id, destination=destination, destination_conn_id=CONN_ID, **kwargs
    )
    result: dict[str, Any] = operator.execute({})  # type: ignore[arg-type]
    return result


@pytest.mark.smoke
def test_s3_export_is_byte_identical_and_replaces_a_previous_set(
    s3: Any, batch: MessageBatch, emulator: EmulatorHandle, emulator_api_key: str
) -> None:
    stream = served_bytes(emulator, emulator_api_key, batch.id)
    prefix = "exports/run-1/"
    xcom = fetch(batch.id, f"s3://{BUCKET}/{prefix}")
    assert keys(s3, prefix) == ["_manifest.json", "results.jsonl"]
    assert body(s3, prefix + "results.jsonl") == stream
    manifest = json.loads(body(s3, prefix + "_manifest.json"))
    assert manifest["files"][0]["sha256"] == hashlib.sha256(stream).hexdigest()
    assert manifest["files"][0]["size"] == len(stream)
    assert xcom["manifest"] == f"s3://{BUCKET}/exports/run-1/_manifest.json"
    assert xcom["files"] == [f"s3://{BUCKET}/exports/run-1/results.jsonl"]
    assert read_manifest(f"s3://{BUCKET}/{prefix}", conn_id=CONN_ID) == manifest
    # A rerun in another layout replaces the set; no staging objects remain.
    fetch(batch.id, f"s3://{BUCKET}/{prefix}", split_by_result_type=True, compression="gzip")
    assert keys(s3, prefix) == [
        "_manifest.json",
        "canceled.jsonl.gz",
        "errored.jsonl.gz",
        "expired.jsonl.gz",
        "succeeded.jsonl.gz",
    ]


def test_s3_fetch_that_breaks_leaves_no_object(s3: Any, batch: MessageBatch, emulator: EmulatorHandle) -> None:
    emulator.add_fault("cut", endpoint="results", after_bytes=300_000, count=None)
    prefix = "exports/broken/"
    with pytest.raises(AirflowException, match="downloading the results") as info:
        fetch(batch.id, f"s3://{BUCKET}/{prefix}", format="parquet")
    assert not isinstance(info.value, AirflowFailException)  # a broken network is worth a retry
    assert emulator.stats()["faults_fired"] >= 1, "the cut never happened"
    assert keys(s3, prefix) == []


def test_s3_missing_bucket_fails_before_downloading(s3: Any, batch: MessageBatch, emulator: EmulatorHandle) -> None:
    before = emulator.stats()["calls"].get("results", 0)
    with pytest.raises(AirflowFailException, match="cannot write to s3://no-such-bucket/x"):
        fetch(batch.id, "s3://no-such-bucket/x")
    assert emulator.stats()["calls"].get("results", 0) == before


def _create(**kwargs: Any) -> str:
    from airflow_provider_anthropix.operators.create import CreateBatchOperator
    from tests.support.airflow import DictStateStore

    request = {"custom_id": "q-1", "params": {"messages": [{"role": "user", "content": "hi"}]}}
    operator = CreateBatchOperator(
        task_id="create",
        requests=[request],
        default_params={"model": "claude-haiku-4-5", "max_tokens": 8},
        results_destination_conn_id=CONN_ID,
        **kwargs,
    )
    batch_id: str = operator.execute({"task_state_store": DictStateStore()})  # type: ignore[arg-type]
    return batch_id


def test_create_checks_the_results_bucket_before_paying(
    s3: Any, emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    with pytest.raises(AirflowFailException, match=r"cannot write to s3://no-such-bucket/x.*nothing was sent"):
        _create(results_destination="s3://no-such-bucket/x")
    assert emulator.stats()["batches_created"] == 0
    assert emulator.stats()["calls"].get("create", 0) == 0
    buckets = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    assert "no-such-bucket" not in buckets  # the check never creates a bucket
    # A writable prefix passes, and the probe object is gone again.
    assert _create(results_destination=f"s3://{BUCKET}/checked/run-1").startswith("msgbatch_")
    assert emulator.stats()["batches_created"] == 1
    assert keys(s3, "checked/") == []

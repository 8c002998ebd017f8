"""FetchBatchResultsOperator against the emulator over loopback HTTP, writing to file://."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset, AssetAlias, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_anthropix.api import MessageBatch
from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.io import MANIFEST_NAME, read_manifest
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator, static_asset_uri
from tests.support.emulator import ended_batch, served_bytes
from tests.support.payloads import counts_of

N = 1_500


@pytest.fixture
def batch(emulator: EmulatorHandle, anthropix_conn_env: str) -> MessageBatch:
    return ended_batch(AnthropixHook(anthropix_conn_env), emulator, N)


@pytest.fixture
def stream(emulator: EmulatorHandle, emulator_api_key: str, batch: MessageBatch) -> bytes:
    return served_bytes(emulator, emulator_api_key, batch.id)


def run(task_id: str, batch_id: str, dest: Path | str, **kwargs: Any) -> dict[str, Any]:
    operator = FetchBatchResultsOperator(task_id=task_id, batch_id=batch_id, destination=f"file://{dest}", **kwargs)
    result: dict[str, Any] = operator.execute({})  # type: ignore[arg-type]
    return result


def names(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def results_calls(emulator: EmulatorHandle) -> int:
    return int(emulator.stats()["calls"].get("results", 0))


@pytest.mark.smoke
def test_jsonl_is_byte_identical_to_the_served_stream(
    tmp_path: Path, batch: MessageBatch, stream: bytes, emulator_api_key: str
) -> None:
    dest = tmp_path / "run"
    xcom = run("fetch", batch.id, dest)
    assert names(dest) == [MANIFEST_NAME, "results.jsonl"]
    assert (dest / "results.jsonl").read_bytes() == stream
    manifest = read_manifest(f"file://{dest}")
    assert manifest is not None
    assert manifest["files"][0]["sha256"] == hashlib.sha256(stream).hexdigest()
    assert manifest["files"][0]["lines"] == N
    assert (
        manifest["counts"]
        == counts_of(stream)
        == {k: v for k, v in batch.request_counts.to_dict().items() if k != "processing"}
    )
    assert xcom["batch_id"] == batch.id
    assert xcom["manifest"] == f"file://{dest}/{MANIFEST_NAME}"
    assert xcom["files"] == [f"file://{dest}/results.jsonl"]
    assert xcom["counts"] == manifest["counts"]
    assert xcom["tokens"]["input"] > 0 and xcom["estimated_cost_usd"] > 0
    text = json.dumps(xcom) + json.dumps(manifest)
    assert emulator_api_key not in text


@pytest.mark.parametrize(
    ("options", "decode"),
    [
        pytest.param({"compression": "gzip"}, "gzip", id="jsonl-gzip"),
        pytest.param({"format": "parquet"}, "parquet", id="parquet"),
        pytest.param({"split_by_result_type": True}, "split", id="split"),
    ],
)
def test_every_format_holds_the_served_lines(
    tmp_path: Path, batch: MessageBatch, stream: bytes, options: dict[str, Any], decode: str
) -> None:
    dest = tmp_path / "run"
    xcom = run("fetch", batch.id, dest, **options)
    manifest = read_manifest(f"file://{dest}")
    assert manifest is not None and manifest["complete"]
    for entry in manifest["files"]:
        assert hashlib.sha256((dest / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
        assert (dest / entry["name"]).stat().st_size == entry["size"]
    if decode == "gzip":
        assert gzip.decompress((dest / "results.jsonl.gz").read_bytes()) == stream
    elif decode == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(dest / "results.parquet")
        assert table.num_rows == N
        assert "\n".join(table.column("raw").to_pylist()).encode() + b"\n" == stream
        assert table.schema.field("input_tokens").type == "int64"
        assert set(table.column("result_type").to_pylist()) == {"succeeded", "errored", "canceled", "expired"}
    else:
        lines: list[bytes] = []
        for kind in ("succeeded", "errored", "canceled", "expired"):
            content = (dest / f"{kind}.jsonl").read_bytes()
            assert all(f'"type":"{kind}"'.encode() in line for line in content.splitlines())
            lines += content.splitlines(keepends=True)
        # Each line is kept byte for byte and in the order it arrived within its outcome.
        assert sorted(lines) == sorted(stream.splitlines(keepends=True))
        assert len(xcom["files"]) == 4


def test_a_cut_stream_is_resumed_and_the_output_is_identical(
    tmp_path: Path, emulator: EmulatorHandle, batch: MessageBatch, stream: bytes
) -> None:
    before = results_calls(emulator)
    emulator.add_fault("cut", endpoint="results", after_bytes=len(stream) // 3, count=2)
    dest = tmp_path / "run"
    run("fetch", batch.id, dest, compression="gzip")
    assert gzip.decompress((dest / "results.jsonl.gz").read_bytes()) == stream
    assert results_calls(emulator) - before == 3  # two cuts, two resumes
    manifest = read_manifest(f"file://{dest}")
    assert manifest is not None and manifest["bytes_downloaded"] == len(stream)


@pytest.mark.smoke
def test_a_fetch_that_breaks_for_good_leaves_no_final_object(
    tmp_path: Path, emulator: EmulatorHandle, batch: MessageBatch, stream: bytes
) -> None:
    emulator.add_fault("cut", endpoint="results", after_bytes=len(stream) // 2, count=None)
    before = results_calls(emulator)
    dest = tmp_path / "run"
    with pytest.raises(AirflowException, match=f"downloading the results of batch {batch.id}") as info:
        run("fetch", batch.id, dest)
    assert not isinstance(info.value, AirflowFailException)  # a broken network is worth a task retry
    # The cut really happened, on every try of the download (first read and each resume).
    assert emulator.stats()["faults_fired"] == results_calls(emulator) - before >= 2
    assert names(dest) == []
    assert read_manifest(f"file://{dest}") is None


def test_a_killed_fetch_publishes_nothing(tmp_path: Path, batch: MessageBatch) -> None:
    dest = tmp_path / "run"
    operator = FetchBatchResultsOperator(task_id="fetch", batch_id=batch.id, destination=f"file://{dest}")
    real = operator.hook.iter_result_bytes

    def killed_after_two_chunks(target: Any, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        for index, chunk in enumerate(real(target, chunk_size=16_384)):
            if index == 2:
                operator.on_kill()  # what the task runner does on SIGTERM
            yield chunk

    operator.hook.iter_result_bytes = killed_after_two_chunks  # type: ignore[method-assign]
    with pytest.raises(AirflowException, match="nothing was published"):
        operator.execute({})  # type: ignore[arg-type]
    assert names(dest) == []


def test_count_mismatch_fails_without_publishing(tmp_path: Path, batch: MessageBatch) -> None:
    dest = tmp_path / "run"
    operator = FetchBatchResultsOperator(task_id="fetch", batch_id=batch.id, destination=f"file://{dest}")
    counts = batch.request_counts
    lying = dataclasses.replace(batch, request_counts=dataclasses.replace(counts, succeeded=counts.succeeded + 5))
    operator.hook.get_batch = lambda batch_id: lying  # type: ignore[method-assign]
    with pytest.raises(AirflowFailException, match=r"but the batch holds .*on_mismatch='warn'"):
        operator.execute({})  # type: ignore[arg-type]
    assert names(dest) == []
    warned = FetchBatchResultsOperator(
        task_id="fetch2", batch_id=batch.id, destination=f"file://{dest}", on_mismatch="warn"
    )
    warned.hook.get_batch = lambda batch_id: lying  # type: ignore[method-assign]
    assert warned.execute({})["complete"] is False  # type: ignore[arg-type]


def test_unended_batch_and_bad_destinations_fail_before_downloading(
    tmp_path: Path, emulator: EmulatorHandle, anthropix_conn_env: str, batch: MessageBatch
) -> None:
    hook = AnthropixHook(anthropix_conn_env)
    emulator.config.processing_seconds = 600
    running = hook.create_batch(
        [{"custom_id": "x", "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}}]
    )
    before = results_calls(emulator)
    with pytest.raises(AirflowFailException, match=rf"batch {running.id} has not ended .*BatchEndedSensor"):
        run("fetch", running.id, tmp_path / "a")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AirflowFailException, match="cannot write to"):
        run("fetch", batch.id, blocker / "sub")
    with pytest.raises(AirflowFailException, match="unusable destination"):
        FetchBatchResultsOperator(task_id="t", batch_id=batch.id, destination="nosuchfs://bucket/x").execute({})  # type: ignore[arg-type]
    with pytest.raises(AirflowFailException, match="no filesystem is registered for memory://"):
        FetchBatchResultsOperator(task_id="t", batch_id=batch.id, destination="memory://x/y").execute({})  # type: ignore[arg-type]
    with pytest.raises(AirflowFailException, match="relative path"):
        FetchBatchResultsOperator(task_id="t", batch_id=batch.id, destination="out/x").execute({})  # type: ignore[arg-type]
    with pytest.raises(AirflowFailException, match="not found"):
        run("fetch", "msgbatch_doesnotexist", tmp_path / "b")
    assert results_calls(emulator) == before


@pytest.mark.smoke
def test_outlets_name_the_destination() -> None:
    static = FetchBatchResultsOperator(task_id="a", batch_id="b", destination="s3://my_aws@bucket/results/")
    assert static.outlets == [Asset(uri="s3://bucket/results")]
    assert static_asset_uri("/data/out") == "file:///data/out"
    assert static_asset_uri("relative/out") is None
    assert static_asset_uri(ObjectStoragePath("file:///data/out")) == "file:///data/out"
    templated = FetchBatchResultsOperator(task_id="c", batch_id="b", destination="s3://bucket/{{ ds }}")
    assert templated.outlets == []
    alias = AssetAlias("anthropix-results")
    assert FetchBatchResultsOperator(
        task_id="d", batch_id="b", destination="s3://bucket/{{ ds }}", outlets=[alias]
    ).outlets == [alias]
    with pytest.raises(ValueError, match="format must be one of"):
        FetchBatchResultsOperator(task_id="e", batch_id="b", destination="/x", format="csv")


def test_a_wrong_key_fails_without_retry_and_without_leaking_it(
    tmp_path: Path, emulator: EmulatorHandle, batch: MessageBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-ant-not-the-right-key-123"
    conn = {"conn_type": "anthropix", "password": wrong, "host": emulator.url, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_WRONG", json.dumps(conn))
    operator = FetchBatchResultsOperator(
        task_id="fetch",
        batch_id=batch.id,
        destination=f"file://{tmp_path / 'run'}",
        anthropix_conn_id="anthropix_wrong",
    )
    with pytest.raises(AirflowFailException, match="401") as info:
        operator.execute({})  # type: ignore[arg-type]
    assert wrong not in str(info.value)
    assert names(tmp_path / "run") == []

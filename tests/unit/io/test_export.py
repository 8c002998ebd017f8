"""The export on file://: byte-exact output, the manifest, routing by outcome, all-or-nothing publication of its own files only."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api.models import RequestCounts
from airflow_provider_anthropix.io import (
    MANIFEST_NAME,
    AtomicPublisher,
    DestinationError,
    ExportInterrupted,
    ExportOptions,
    ResultsMismatchError,
    export_results,
    read_manifest,
)
from airflow_provider_anthropix.io.progress import Progress
from tests.support.payloads import chunked, counts_of, mixed_results, result_line

DATA = mixed_results(1_000, padding=100)
COUNTS = RequestCounts(**counts_of(DATA))


def export(dest: Path, data: bytes = DATA, **options: Any) -> Any:
    expected = options.pop("expected", COUNTS)
    return export_results(
        iter(chunked(data, 4096)),
        ObjectStoragePath(f"file://{dest}"),
        batch_id="msgbatch_test",
        expected=expected,
        options=ExportOptions(**options),
    )


def visible(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


@pytest.mark.smoke
def test_jsonl_export_is_byte_exact_with_a_manifest(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    result = export(dest)
    assert visible(dest) == [MANIFEST_NAME, "results.jsonl"]
    assert (dest / "results.jsonl").read_bytes() == DATA
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    assert manifest == result.manifest == read_manifest(f"file://{dest}")
    [entry] = manifest["files"]
    assert entry == {
        "name": "results.jsonl",
        "size": len(DATA),
        "lines": 1_000,
        "sha256": hashlib.sha256(DATA).hexdigest(),
        "uri": f"file://{dest}/results.jsonl",
    }
    assert manifest["batch_id"] == "msgbatch_test"
    assert manifest["expected_counts"] == {**counts_of(DATA), "processing": 0}
    assert manifest["counts"] == counts_of(DATA)
    assert manifest["errored_by_type"] == {"api_error": counts_of(DATA)["errored"]}
    assert manifest["complete"] is True and manifest["problems"] == []
    succeeded = counts_of(DATA)["succeeded"]
    assert manifest["tokens"] == {
        "input": 10 * succeeded,
        "output": 5 * succeeded,
        "cache_creation_input": 0,
        "cache_read_input": 0,
    }
    assert manifest["estimated_cost_usd"] == pytest.approx(succeeded * (10 * 3.0 + 5 * 15.0) / 1e6 / 2)
    assert manifest["started_at"] <= manifest["ended_at"]
    xcom = result.xcom()
    assert set(xcom) >= {"batch_id", "manifest", "files", "counts", "tokens", "estimated_cost_usd"}
    assert xcom["manifest"] == f"file://{dest}/{MANIFEST_NAME}"
    assert len(json.dumps(xcom)) < 2_000  # a summary, never results


def test_split_by_result_type_gzip(tmp_path: Path) -> None:
    import gzip

    dest = tmp_path / "split"
    result = export(dest, split_by_result_type=True, compression="gzip")
    names = [f"{kind}.jsonl.gz" for kind in ("canceled", "errored", "expired", "succeeded")]
    assert visible(dest) == [MANIFEST_NAME, *names]
    lines: list[bytes] = []
    for entry in result.manifest["files"]:
        raw = (dest / entry["name"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
        content = gzip.decompress(raw).splitlines()
        assert entry["lines"] == len(content) == counts_of(DATA)[entry["result_type"]]
        lines += content
    assert sorted(lines) == sorted(DATA.splitlines())


def test_mismatch_fails_and_publishes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    wrong = RequestCounts(
        succeeded=COUNTS.succeeded, errored=COUNTS.errored + 3, canceled=COUNTS.canceled, expired=COUNTS.expired
    )
    with pytest.raises(ResultsMismatchError, match="1,000 result lines, but the batch holds 1,003"):
        export(dest, expected=wrong)
    assert visible(dest) == []
    duplicated = DATA + DATA.splitlines(keepends=True)[0]
    with pytest.raises(ResultsMismatchError, match="repeat an earlier custom_id"):
        export(dest, data=duplicated, expected=None)
    assert visible(dest) == []


def test_mismatch_can_be_published_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / "out"
    wrong = RequestCounts(
        succeeded=COUNTS.succeeded + 1, errored=COUNTS.errored, canceled=COUNTS.canceled, expired=COUNTS.expired
    )
    with caplog.at_level(logging.WARNING):
        result = export(dest, expected=wrong, on_mismatch="warn")
    assert result.manifest["complete"] is False
    assert result.manifest["problems"]
    assert "do not match" in caplog.text
    assert (dest / "results.jsonl").read_bytes() == DATA


def failing_stream(data: bytes, fail_after: int) -> Iterator[bytes]:
    for index, piece in enumerate(chunked(data, 4096)):
        if index == fail_after:
            raise ConnectionResetError("the stream broke for good")
        yield piece


@pytest.mark.smoke
def test_a_fetch_that_dies_mid_stream_leaves_no_final_object(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(ConnectionResetError):
        export_results(
            failing_stream(DATA, 10),
            ObjectStoragePath(f"file://{dest}"),
            batch_id="b",
            expected=COUNTS,
        )
    assert visible(dest) == []  # no results, no manifest, no staging folder
    stop_after = iter(range(5))
    with pytest.raises(ExportInterrupted):
        export_results(
            iter(chunked(DATA, 4096)),
            ObjectStoragePath(f"file://{dest}"),
            batch_id="b",
            expected=COUNTS,
            should_stop=lambda: next(stop_after, None) is None,
        )
    assert visible(dest) == []


def test_a_failed_rerun_leaves_the_folder_without_a_valid_manifest_or_keeps_the_old_one(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    export(dest, compression="gzip")
    before = (dest / MANIFEST_NAME).read_bytes()
    # A rerun that dies before publishing keeps the previous, complete export untouched.
    with pytest.raises(ConnectionResetError):
        export_results(failing_stream(DATA, 3), ObjectStoragePath(f"file://{dest}"), batch_id="b", expected=COUNTS)
    assert (dest / MANIFEST_NAME).read_bytes() == before
    assert visible(dest) == [MANIFEST_NAME, "results.jsonl.gz"]
    # A successful rerun in another format replaces the set: the old object goes away.
    export(dest)
    assert visible(dest) == [MANIFEST_NAME, "results.jsonl"]


class RecordingFS:
    """Delegates to a real filesystem and records the mutating calls in order."""

    def __init__(self, fs: Any, calls: list[tuple[str, str]]) -> None:
        self._fs = fs
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._fs, name)
        if name not in ("mv", "rm", "rm_file", "open"):
            return attr

        def record(path: str, *args: Any, **kwargs: Any) -> Any:
            target = args[0] if name == "mv" else path
            if name != "open" or "w" in (args[0] if args else kwargs.get("mode", "rb")):
                self._calls.append(("rm" if name == "rm_file" else name, str(target).rsplit("/", 1)[-1]))
            return attr(path, *args, **kwargs)

        return record


def test_manifest_is_removed_first_and_written_last(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    export(dest, split_by_result_type=True)
    calls: list[tuple[str, str]] = []
    publisher = AtomicPublisher(ObjectStoragePath(f"file://{dest}"))
    publisher.fs = RecordingFS(publisher.fs, calls)
    export_results(
        iter(chunked(DATA, 4096)),
        ObjectStoragePath(f"file://{dest}"),
        batch_id="b",
        expected=COUNTS,
        options=ExportOptions(split_by_result_type=True),
        publisher=publisher,
    )
    moves = [(op, name) for op, name in calls if op in ("mv", "rm")]
    assert moves[0] == ("rm", MANIFEST_NAME)
    assert moves[-2] == ("mv", MANIFEST_NAME)
    assert {name for op, name in moves[1:-2] if op == "mv"} == {
        "succeeded.jsonl",
        "errored.jsonl",
        "canceled.jsonl",
        "expired.jsonl",
    }
    assert moves[-1][0] == "rm" and moves[-1][1].startswith("_tmp_")


def test_destination_problems_fail_before_any_download(tmp_path: Path) -> None:
    pulled = []

    def stream() -> Iterator[bytes]:
        pulled.append(True)
        yield DATA

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DestinationError, match="cannot write to"):
        export_results(stream(), ObjectStoragePath(f"file://{blocker}/sub"), batch_id="b", expected=COUNTS)
    with pytest.raises(DestinationError, match="no filesystem is registered for memory://"):
        export_results(stream(), ObjectStoragePath("memory://bucket/x"), batch_id="b", expected=COUNTS)
    assert pulled == []


def test_staging_left_by_a_killed_export_is_cleaned_by_the_next(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    (dest / "_tmp_0123456789ab").mkdir(parents=True)
    (dest / "_tmp_0123456789ab" / "results.jsonl").write_bytes(DATA[:100])
    export(dest)
    assert visible(dest) == [MANIFEST_NAME, "results.jsonl"]


def test_parquet_export_rows_match_the_stream(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    dest = tmp_path / "pq"
    result = export(dest, output_format="parquet")
    [entry] = result.manifest["files"]
    assert entry["name"] == "results.parquet" and entry["lines"] == 1_000
    table = pq.read_table(dest / "results.parquet")
    assert table.num_rows == 1_000
    assert "\n".join(table.column("raw").to_pylist()).encode() + b"\n" == DATA


def test_options_are_checked_up_front() -> None:
    with pytest.raises(ValueError, match="format must be one of"):
        ExportOptions(output_format="csv")
    with pytest.raises(ValueError, match="compression for jsonl"):
        ExportOptions(compression="zstd")
    with pytest.raises(ValueError, match="codec"):
        ExportOptions(output_format="parquet", compression="zip")


def test_progress_line_reads_well() -> None:
    now = [0.0]
    messages: list[str] = []

    class Log:
        def info(self, fmt: str, *args: Any) -> None:
            messages.append(fmt % args)

    progress = Progress(expected_lines=100_000, interval=5.0, logger=Log(), clock=lambda: now[0])  # type: ignore[arg-type]
    progress.update(1_000, 1_000_000)
    assert messages == []
    now[0] = 5.0
    progress.update(11_345, 40_000_000)
    assert messages == ["12,345 / 100,000 results, 41.0 MB, 8.2 MB/s, 5.0 s"]


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        pytest.param({"output_format": "parquet"}, "zstd", id="parquet-default"),
        pytest.param({"output_format": "parquet", "compression": "snappy"}, "snappy", id="parquet-snappy"),
        pytest.param({"output_format": "parquet", "compression": "none"}, None, id="parquet-none"),
        pytest.param({"compression": "gzip"}, "gzip", id="jsonl-gzip"),
        pytest.param({}, None, id="jsonl"),
    ],
)
def test_the_manifest_names_the_codec_used(tmp_path: Path, options: dict[str, Any], shown: str | None) -> None:
    if options.get("output_format") == "parquet":
        pq = pytest.importorskip("pyarrow.parquet")
    result = export(tmp_path / "out", **options)
    assert result.manifest["compression"] == shown
    if options.get("output_format") == "parquet":
        column = pq.ParquetFile(tmp_path / "out" / "results.parquet").metadata.row_group(0).column(0)
        assert column.compression.lower() == (shown or "uncompressed")


def test_the_log_names_the_staging_folder_as_a_full_uri(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        export(dest)
    assert f"(staging in file://{dest}/_tmp_" in caplog.text
    s3 = AtomicPublisher(ObjectStoragePath("s3://bucket/results/run"))
    assert s3.staging_uri == f"s3://bucket/results/run/_tmp_{s3.token}"


# -- through its own interface: all or nothing, only its own files, routing, the manifest ----------------


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def with_neighbours(dest: Path) -> dict[str, bytes]:
    """A destination holding an earlier export (gzip) and a user's own files beside it."""
    export(dest, compression="gzip")
    (dest / "notes.txt").write_text("mine")
    (dest / "sub").mkdir()
    (dest / "sub" / "results.jsonl").write_text("also mine")
    return snapshot(dest)


class FailingMove:
    """A filesystem whose ``mv`` of the ``fail_at``-th published object raises (a store that goes away)."""

    def __init__(self, fs: Any, fail_at: int) -> None:
        self._fs = fs
        self.fail_at = fail_at
        self.moved: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def mv(self, source: str, target: str, **kwargs: Any) -> Any:
        if len(self.moved) + 1 == self.fail_at:
            raise OSError("the store went away mid-publish")
        self.moved.append(target.rsplit("/", 1)[-1])
        return self._fs.mv(source, target, **kwargs)


def test_a_stream_that_breaks_changes_nothing_in_the_destination(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    before = with_neighbours(dest)
    with pytest.raises(ConnectionResetError):
        export_results(
            failing_stream(DATA, 20),
            ObjectStoragePath(f"file://{dest}"),
            batch_id="b",
            expected=COUNTS,
            options=ExportOptions(split_by_result_type=True),
        )
    assert snapshot(dest) == before  # the earlier export and the neighbours, byte for byte; no staging left


def test_a_publish_that_fails_midway_leaves_no_manifest_and_touches_only_its_own_names(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    before = with_neighbours(dest)
    publisher = AtomicPublisher(ObjectStoragePath(f"file://{dest}"))
    failing = publisher.fs = FailingMove(publisher.fs, fail_at=3)  # two of the four objects are in place
    with pytest.raises(OSError, match="went away"):
        export_results(
            iter(chunked(DATA, 4096)),
            ObjectStoragePath(f"file://{dest}"),
            batch_id="b",
            expected=COUNTS,
            options=ExportOptions(split_by_result_type=True),
            publisher=publisher,
        )
    after = snapshot(dest)
    assert MANIFEST_NAME not in after  # nothing claims to be a complete export
    assert not [name for name in after if name.startswith("_tmp_")]
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    assert len(failing.moved) == 2 and changed == {MANIFEST_NAME, *failing.moved}
    # The next export publishes the whole set and removes the earlier one's object, nothing else.
    export(dest, split_by_result_type=True)
    assert sorted(snapshot(dest)) == [
        MANIFEST_NAME,
        "canceled.jsonl",
        "errored.jsonl",
        "expired.jsonl",
        "notes.txt",
        "sub/results.jsonl",
        "succeeded.jsonl",
    ]


def test_unknown_result_types_are_routed_to_their_own_object(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    data = mixed_results(30) + result_line("new-1", "refunded") + result_line("odd-1", "Not-A-Stem!")
    result = export(dest, data=data, expected=None, split_by_result_type=True, on_mismatch="warn")
    by_name = {entry["name"]: entry for entry in result.manifest["files"]}
    assert set(by_name) == {
        f"{kind}.jsonl" for kind in ("succeeded", "errored", "canceled", "expired", "refunded", "other")
    }
    assert (dest / "refunded.jsonl").read_bytes() == result_line("new-1", "refunded")
    assert (dest / "other.jsonl").read_bytes() == result_line("odd-1", "Not-A-Stem!")
    routed = b"".join((dest / name).read_bytes() for name in by_name)
    assert sorted(routed.splitlines()) == sorted(data.splitlines())
    assert all(entry["lines"] == len((dest / name).read_bytes().splitlines()) for name, entry in by_name.items())


def test_the_manifest_carries_the_callers_entries_and_describes_every_object(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    extra = {"job": {"rounds": 2, "batches": 3}, "estimate": {"worst_case_cost_usd": 1.5}}
    result = export_results(
        iter(chunked(DATA, 4096)),
        ObjectStoragePath(f"file://{dest}"),
        batch_id="b",
        expected=COUNTS,
        options=ExportOptions(split_by_result_type=True, pipeline=False),
        manifest_extra=extra,
    )
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    assert manifest == result.manifest
    assert manifest["job"] == extra["job"] and manifest["estimate"] == extra["estimate"]
    for entry in manifest["files"]:
        raw = (dest / entry["name"]).read_bytes()
        assert (entry["size"], entry["sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
        assert entry["lines"] == manifest["counts"][entry["result_type"]]

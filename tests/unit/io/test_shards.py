"""Shards of a job: the retry scan of a round's results, and the fingerprint of the input.

The retry scan (``scan_for_retries``): a round end reads each batch's results to pick what
the next round sends again: errored results of a retryable type, expired ones when
``retry_expired``; never canceled ones and never permanent errors (those are counted by type
for the report). The stream arrives in chunks that end anywhere, mid-line and mid-character
included: the answer must not depend on where.

The fingerprint a job records is the same whether taken by a separate read or by the split's.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.io.shards import (
    ReadFingerprint,
    RetryScan,
    fingerprint_inputs,
    iter_input_requests,
    scan_for_retries,
)
from airflow_provider_anthropix.workflow.outcome import RETRYABLE_ERROR_TYPES

MODEL_ID = "claude-haiku-4-5-20251001"


def succeeded(custom_id: str, text: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "result": {
            "type": "succeeded",
            "message": {
                "id": f"msg_01{custom_id.replace('-', '')}",
                "type": "message",
                "role": "assistant",
                "model": MODEL_ID,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        },
    }


def errored(custom_id: str, error_type: str, message: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "result": {"type": "errored", "error": {"type": "error", "error": {"type": error_type, "message": message}}},
    }


def ended(custom_id: str, result_type: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "result": {"type": result_type}}


#: One batch's results, in no particular order, as the API writes them: one JSON object a line.
RESULTS: list[dict[str, Any]] = [
    succeeded("ok-1", "Paris.", 14, 3),
    errored("api-1", "api_error", "Internal server error"),
    ended("cancel-1", "canceled"),
    # A succeeded answer whose text looks like an errored result: the scan reads JSON, not substrings.
    succeeded("ok-2", 'Sure: {"type": "errored", "error": {"type": "api_error"}} — and «ünïcödé» ✓', 40, 31),
    errored("overloaded-1", "overloaded_error", "Overloaded"),
    ended("expired-1", "expired"),
    errored("invalid-1", "invalid_request_error", "max_tokens: 100000 > 64000, the maximum for this model"),
    errored("future-1", "quantum_flux_error", "a type this provider has never heard of"),
    ended("cancel-2", "canceled"),
    errored("api-2", "api_error", "Internal server error"),
    errored("invalid-2", "invalid_request_error", "messages: roles must alternate"),
    ended("expired-2", "expired"),
    succeeded("ok-3", "日本語の答え", 21, 12),
    errored("overloaded-2", "overloaded_error", "Overloaded"),
]
STREAM = b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in RESULTS)

RETRYABLE_ERRORED = {"api-1", "api-2", "overloaded-1", "overloaded-2"}
EXPIRED = {"expired-1", "expired-2"}
CANCELED = {"cancel-1", "cancel-2"}
PERMANENT = {"invalid_request_error": 2, "quantum_flux_error": 1}
#: What the succeeded answers used (the job bills its ended batches by it).
USAGE = {MODEL_ID: {"input": 14 + 40 + 21, "output": 3 + 31 + 12, "cache_creation_input": 0, "cache_read_input": 0}}


def check_the_corpus() -> None:
    """The results above hold every outcome kind, every retryable type and characters 1-byte chunks cut."""
    kinds = {line["result"]["type"] for line in RESULTS}
    assert kinds == {"succeeded", "errored", "canceled", "expired"}
    error_types = {line["result"]["error"]["error"]["type"] for line in RESULTS if line["result"]["type"] == "errored"}
    assert set(RETRYABLE_ERROR_TYPES) < error_types
    assert "invalid_request_error" in error_types
    assert b"\xc3\xbc" in STREAM


def chunked(data: bytes, size: int | None) -> Iterator[bytes]:
    if size is None:
        yield data
        return
    for start in range(0, len(data), size):
        yield data[start : start + size]


def scan(data: bytes, size: int | None, **options: Any) -> RetryScan:
    options.setdefault("retry_error_types", RETRYABLE_ERROR_TYPES)
    options.setdefault("retry_expired", True)
    return scan_for_retries(chunked(data, size), **options)


@pytest.mark.parametrize("size", [1, 7, None], ids=["1-byte", "7-byte", "whole"])
@pytest.mark.parametrize("retry_expired", [True, False], ids=["retry_expired", "keep_expired"])
def test_retryable_errors_and_expiries_are_picked_canceled_and_permanent_never(
    size: int | None, retry_expired: bool
) -> None:
    check_the_corpus()
    result = scan(STREAM, size, retry_expired=retry_expired)
    assert result.ids == RETRYABLE_ERRORED | (EXPIRED if retry_expired else set())
    assert result.counts == {"errored": 4, **({"expired": 2} if retry_expired else {})}
    assert result.permanent_errors == PERMANENT
    assert not result.ids & CANCELED
    assert not result.ids & {"ok-1", "ok-2", "ok-3", "invalid-1", "invalid-2", "future-1"}
    assert result.lines == len(RESULTS)
    assert result.tokens_by_model == USAGE


@pytest.mark.parametrize("size", [1, 7, None], ids=["1-byte", "7-byte", "whole"])
def test_a_last_line_without_its_newline_is_still_scanned(size: int | None) -> None:
    data = STREAM + json.dumps(errored("api-last", "api_error", "Internal server error")).encode()
    result = scan(data, size)
    assert "api-last" in result.ids
    assert result.counts["errored"] == 5


def test_canceled_requests_are_never_retried_whatever_the_options() -> None:
    everything = ("api_error", "overloaded_error", "canceled", "quantum_flux_error")
    result = scan(STREAM, 7, retry_error_types=everything, retry_expired=True)
    assert not result.ids & CANCELED
    assert "canceled" not in result.counts


def test_retry_error_types_decides_which_errors_are_permanent() -> None:
    result = scan(STREAM, 7, retry_error_types=("overloaded_error",), retry_expired=False)
    assert result.ids == {"overloaded-1", "overloaded-2"}
    assert result.permanent_errors == {**PERMANENT, "api_error": 2}
    none = scan(STREAM, None, retry_error_types=(), retry_expired=False)
    assert none.ids == set() and none.counts == {}
    assert none.permanent_errors == {**PERMANENT, "api_error": 2, "overloaded_error": 2}


def test_every_chunking_gives_the_same_scan() -> None:
    whole = scan(STREAM, None)
    for size in (1, 2, 3, 5, 7, 64, len(STREAM) - 1):
        assert scan(STREAM, size) == whole, f"chunks of {size} bytes"


# -- the input's fingerprint ----------------------------------------------------------------------------


def request_line(i: int) -> bytes:
    params = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": f"q {i}"}]}
    return json.dumps({"custom_id": f"r-{i}", "params": params}).encode() + b"\n"


def test_the_split_read_gives_the_separate_read_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + request_line(0) + b"\n  \n" + request_line(1) + b"not json\n")
    (tmp_path / "b.jsonl").write_bytes(request_line(2) + request_line(3).rstrip(b"\n"))  # no final newline
    # Two gzip members and zero padding after them: bytes no line reader asks for.
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(request_line(4)) + gzip.compress(request_line(5)) + b"\0" * 9)
    files = [ObjectStoragePath(f"file://{tmp_path / name}") for name in ("a.jsonl", "b.jsonl", "c.jsonl.gz")]

    read = ReadFingerprint(files)
    lines = [(Path(name).name, line) for name, line, _ in iter_input_requests(files, read)]

    expected = [("a.jsonl", 1), ("a.jsonl", 4), ("a.jsonl", 5), ("b.jsonl", 1), ("b.jsonl", 2)]
    assert lines == [*expected, ("c.jsonl.gz", 1), ("c.jsonl.gz", 2)]
    assert read.prints() == fingerprint_inputs(files, content=True)
    assert all(entry["content"].startswith("sha256:") for entry in read.prints())

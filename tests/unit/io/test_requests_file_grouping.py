"""Validation messages a person can act on: one line per kind of problem, a hint for batch-wide fixes,
and hostile lines (nested 10,000 deep) reported like any other bad line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api import BatchValidationError
from airflow_provider_anthropix.io.requests_file import Undecodable, iter_jsonl, spool_batch

V = "2026-10-21"


def request(custom_id: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}
    body.update(params)
    return {"custom_id": custom_id, "params": body}


def _spool(items: list[tuple[int | None, Any]], tmp_path: Path, **options: Any) -> BatchValidationError:
    with pytest.raises(BatchValidationError) as info:
        spool_batch(items, api_version=V, file="requests.jsonl", spool_dir=str(tmp_path), **options)
    assert list(tmp_path.iterdir()) == []  # the spool file is gone
    return info.value


def test_the_same_missing_param_in_every_request_is_one_line_and_hints_default_params(tmp_path: Path) -> None:
    items: list[tuple[int | None, Any]] = [(n + 1, request(f"r-{n}")) for n in range(300)]
    exc = _spool(items, tmp_path)
    text = str(exc)
    assert exc.count == 300
    lines = text.splitlines()
    assert lines[0] == "300 problems in the batch requests, nothing was sent:"
    assert lines[1].strip() == (
        "params.max_tokens is missing \u2014 300 requests: requests.jsonl:1 (custom_id r-0), "
        "requests.jsonl:2 (custom_id r-1), requests.jsonl:3 (custom_id r-2), requests.jsonl:4 (custom_id r-3), "
        "requests.jsonl:5 (custom_id r-4), ... and 295 more"
    )
    assert lines[2].strip().startswith("hint: params.max_tokens is missing in every request;")
    assert 'default_params={"max_tokens": ...}' in text
    assert len(lines) == 3


def test_no_hint_when_only_some_requests_lack_the_param(tmp_path: Path) -> None:
    items: list[tuple[int | None, Any]] = [(1, request("a", max_tokens=5)), (2, request("b")), (3, request("c"))]
    exc = _spool(items, tmp_path)
    assert "hint:" not in str(exc)
    assert "params.max_tokens is missing \u2014 2 requests: requests.jsonl:2 (custom_id b), requests.jsonl:3" in str(
        exc
    )


def test_different_problems_stay_apart_in_order_of_appearance(tmp_path: Path) -> None:
    items: list[tuple[int | None, Any]] = [
        (1, request("a", max_tokens=5, stream=True)),
        (2, request("b c", max_tokens=5)),
        (3, request("d", max_tokens=5, stream=True)),
        (4, request("e", max_tokens=5, stream=True)),
    ]
    text = str(_spool(items, tmp_path))
    lines = [line.strip() for line in text.splitlines()[1:]]
    assert lines[0].startswith("params.stream is not allowed in a batch request; remove it \u2014 3 requests:")
    assert lines[1] == (
        "requests.jsonl:2 custom_id b c: custom_id 'b c' is invalid: use 1 to 64 characters from A-Z, a-z, 0-9, "
        "'_' and '-'"
    )
    assert len(lines) == 2


def test_the_shown_limit_counts_lines_and_the_rest_is_summed(tmp_path: Path) -> None:
    items: list[tuple[int | None, Any]] = [(n + 1, request(f"r-{n}", max_tokens=-n - 1)) for n in range(20)]
    text = str(_spool(items, tmp_path, max_problems_shown=3))
    assert text.count("params.max_tokens must be an integer >= 1") == 3  # values differ: no grouping
    assert text.rstrip().endswith("... and 17 more")


def test_a_line_nested_10000_deep_is_a_problem_with_file_and_line(tmp_path: Path) -> None:
    deep = '{"custom_id":"d","params":' + "[" * 10_000 + "]" * 10_000 + "}"
    path = tmp_path / "in" / "requests.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join([json.dumps(request("ok", max_tokens=5)), deep, "[" * 10_000]) + "\n")
    opath = ObjectStoragePath(f"file://{path}")
    decoded = list(iter_jsonl(opath))
    assert [line for line, _ in decoded] == [1, 2, 3]
    assert isinstance(decoded[1][1], Undecodable) and isinstance(decoded[2][1], Undecodable)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    with pytest.raises(BatchValidationError) as info:
        spool_batch(decoded, api_version=V, file=str(opath), spool_dir=str(spool_dir))
    text = str(info.value)
    assert info.value.count == 2
    assert f"{opath}:2, {opath}:3" in text and "nested too deeply" in text


def test_a_job_split_groups_and_hints_like_the_create(tmp_path: Path) -> None:
    """split_requests (BatchJobOperator, SplitRequestsOperator) reports problems as spool_batch does."""
    from airflow_provider_anthropix.io.shards import ShardWriter, split_requests

    items: list[tuple[str | None, int | None, Any]] = [("in.jsonl", n + 1, request(f"r-{n}")) for n in range(300)]
    writer = ShardWriter(lambda name: (tmp_path / name.replace("/", "_")).open("wb"), prefix="round-0")
    with pytest.raises(BatchValidationError) as info:
        split_requests(items, writer, api_version=V, operator="SplitRequestsOperator")
    lines = str(info.value).splitlines()
    assert info.value.count == 300
    assert lines[1].strip().startswith("params.max_tokens is missing \u2014 300 requests: in.jsonl:1 (custom_id r-0)")
    assert lines[2].strip().startswith("hint: params.max_tokens is missing in every request;")
    assert "(SplitRequestsOperator's default_params argument)" in lines[2]
    assert len(lines) == 3

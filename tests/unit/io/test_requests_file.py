"""Reading a request file for a create: JSONL (plain or gzip), defaults merged under each request, validation, the spool."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api import BatchValidationError
from airflow_provider_anthropix.io.requests_file import Undecodable, iter_jsonl, merge_defaults, spool_batch

V_NEW = "2026-10-21"
V_OLD = "2023-06-01"


def request(custom_id: str, **params: Any) -> dict[str, Any]:
    body = {"model": "claude-test", "max_tokens": 16, "messages": [{"role": "user", "content": f"q {custom_id}"}]}
    body.update(params)
    return {"custom_id": custom_id, "params": body}


def items(requests: list[Any]) -> list[tuple[int | None, Any]]:
    return [(None, r) for r in requests]


@pytest.mark.smoke
def test_spooled_body_is_the_exact_create_json(tmp_path: Path) -> None:
    requests = [request(f"r-{i}") for i in range(5)]
    spooled = spool_batch(items(requests), api_version=V_NEW, spool_dir=str(tmp_path))
    try:
        body = b"".join(spooled.chunks())
        assert json.loads(body) == {"requests": requests}
        assert len(body) == spooled.size == spooled.body().size
        assert spooled.request_count == 5
        # re-iterable: a second send attempt streams the same bytes
        assert b"".join(spooled.body().chunks()) == body
    finally:
        spooled.discard()
    assert list(tmp_path.iterdir()) == []


def test_default_params_are_merged_under_each_request() -> None:
    merged = merge_defaults(
        {"custom_id": "a", "params": {"max_tokens": 5, "messages": []}},
        {"model": "m", "max_tokens": 100, "system": "be brief"},
    )
    assert merged == {"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "system": "be brief", "messages": []}}
    assert merge_defaults("not a request", {"model": "m"}) == "not a request"


def test_defaults_fill_in_what_validation_requires(tmp_path: Path) -> None:
    bare = [{"custom_id": "a", "params": {"messages": [{"role": "user", "content": "hi"}]}}]
    with pytest.raises(BatchValidationError, match="model is missing"):
        spool_batch(items(bare), api_version=V_NEW, spool_dir=str(tmp_path))
    spooled = spool_batch(
        items(bare), api_version=V_NEW, default_params={"model": "m", "max_tokens": 9}, spool_dir=str(tmp_path)
    )
    spooled.discard()
    assert spooled.request_count == 1


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (request("has space"), "custom_id 'has space' is invalid"),
        (request("x" * 65), "is invalid"),
        ({"params": request("a")["params"]}, "custom_id is missing"),
        ({"custom_id": "a"}, "params is missing"),
        (request("a", max_tokens="16"), "max_tokens must be an integer"),
        (request("a", max_tokens=0), "max_tokens must be an integer >= 1"),
        (request("a", stream=True), "stream is not allowed"),
        (request("a", messages=[{"role": "assistant", "content": "hi"}]), "first turn comes from the user"),
        (request("a", messages=[]), "messages must be a non-empty list"),
        (request("a", temperature=0.5), "temperature is not accepted by API version 2026-10-21"),
    ],
)
def test_each_rule_names_the_request(tmp_path: Path, bad: Any, expected: str) -> None:
    with pytest.raises(BatchValidationError, match=expected) as info:
        spool_batch(items([request("ok-1"), bad]), api_version=V_NEW, spool_dir=str(tmp_path))
    assert "requests[1]" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_version_rules_follow_the_connection_version(tmp_path: Path) -> None:
    spooled = spool_batch(items([request("a", temperature=0.5)]), api_version=V_OLD, spool_dir=str(tmp_path))
    spooled.discard()
    with pytest.raises(BatchValidationError, match="temperature must be a number between 0 and 1"):
        spool_batch(items([request("a", temperature=1.5)]), api_version=V_OLD, spool_dir=str(tmp_path))


def test_duplicates_count_and_size_limits(tmp_path: Path) -> None:
    with pytest.raises(BatchValidationError, match="used more than once"):
        spool_batch(items([request("a"), request("a")]), api_version=V_NEW, spool_dir=str(tmp_path))
    with pytest.raises(BatchValidationError, match="more than 2 requests"):
        spool_batch(items([request(f"r{i}") for i in range(3)]), api_version=V_NEW, max_requests=2)
    with pytest.raises(BatchValidationError, match="over the API's limit of 300 bytes"):
        spool_batch(items([request(f"r{i}") for i in range(3)]), api_version=V_NEW, max_body_bytes=300)
    with pytest.raises(BatchValidationError, match="no requests"):
        spool_batch([], api_version=V_NEW)


@pytest.mark.smoke
def test_jsonl_gz_errors_name_file_line_and_custom_id_and_count_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    lines = [json.dumps(request("good-1")), "", "{not json"]
    lines += [json.dumps(request(f"bad-{i}", stream=True)) for i in range(30)]
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    opath = ObjectStoragePath(f"file://{path}")
    decoded = list(iter_jsonl(opath))
    assert decoded[0][0] == 1
    assert isinstance(decoded[1][1], Undecodable)
    assert decoded[1][0] == 3  # blank line 2 skipped, numbering kept
    with pytest.raises(BatchValidationError) as info:
        spool_batch(decoded, api_version=V_NEW, file=str(opath), max_problems_shown=5, spool_dir=str(tmp_path))
    text = str(info.value)
    assert info.value.count == 31
    assert f"{opath}:3: the line is not valid JSON" in text
    # 30 identical problems are one line naming the first few places and how many more.
    assert (
        f"params.stream is not allowed in a batch request; remove it \u2014 30 requests: {opath}:4 (custom_id bad-0)"
        in text
    )
    assert f"{opath}:8 (custom_id bad-4), ... and 25 more" in text
    assert len(text.splitlines()) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["in.jsonl.gz"]

"""The per-request and per-batch rules of the Message Batches API, one test per rule, in both API versions."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_anthropix.api.limits import MAX_REQUESTS
from airflow_provider_anthropix.api.validation import (
    BatchChecker,
    ValidationProblem,
    check_api_version,
    check_body_size,
    validate_batch,
    validate_request,
)

NEW, OLD = "2026-10-21", "2023-06-01"


def req(custom_id: Any = "q-1", **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-test", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    body.update(params)
    return {"custom_id": custom_id, "params": body}


def one(request: Any, version: str = NEW) -> str:
    problems = validate_request(request, api_version=version)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.smoke
@pytest.mark.parametrize("version", [NEW, OLD])
def test_a_valid_request_has_no_problem(version: str) -> None:
    request = req(
        system=[{"type": "text", "text": "be brief"}],
        stop_sequences=["END"],
        metadata={"user_id": "u"},
        tools=[{"name": "t", "input_schema": {"type": "object"}}],
        tool_choice={"type": "auto"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        max_tokens=2048,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
        ],
    )
    assert validate_request(request, api_version=version) == []


@pytest.mark.parametrize("custom_id", ["", "a" * 65, "has space", "dot.ted", "ünï", 17, None, "newline-at-the-end\n"])
def test_custom_id_pattern(custom_id: Any) -> None:
    message = one(req(custom_id))
    assert message.startswith("custom_id")
    assert "missing" in message or "1 to 64 characters" in message


def test_custom_id_at_the_limits_is_fine() -> None:
    assert validate_request(req("a" * 64), api_version=NEW) == []
    assert validate_request(req("A_z-9"), api_version=NEW) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"model": None}, "params.model is missing"),
        ({"model": ""}, "params.model must be a non-empty string"),
        ({"max_tokens": 0}, "params.max_tokens must be an integer >= 1"),
        ({"max_tokens": True}, "params.max_tokens must be an integer >= 1"),
        ({"max_tokens": "5"}, "params.max_tokens must be an integer >= 1"),
        ({"messages": []}, "params.messages must be a non-empty list"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "params.messages[0].role must be 'user'"),
        ({"messages": [{"role": "system", "content": "x"}]}, "params.messages[0].role must be 'user' or 'assistant'"),
        ({"messages": [{"role": "user", "content": 3}]}, "params.messages[0].content must be a string or a list"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "params.messages[0].content[0] must be"),
        ({"messages": ["hi"]}, "params.messages[0] must be an object"),
        ({"stream": False}, "params.stream is not allowed in a batch"),
        ({"system": 5}, "params.system must be a string or a list"),
        ({"stop_sequences": "END"}, "params.stop_sequences must be a list of strings"),
        ({"metadata": []}, "params.metadata must be an object"),
        ({"tools": [1]}, "params.tools must be a list of objects"),
    ],
)
def test_params_shape(params: dict[str, Any], field: str) -> None:
    request = req(**params)
    if params.get("model", "") is None:
        del request["params"]["model"]
    assert field in one(request)


def test_missing_params_and_extra_fields() -> None:
    assert "params is missing" in one({"custom_id": "a"})
    assert "params must be an object" in one({"custom_id": "a", "params": []})
    assert "unexpected field 'method'" in one({**req(), "method": "POST"})
    assert "must be an object" in one(["a"])


@pytest.mark.smoke
@pytest.mark.parametrize("name", ["temperature", "top_p", "top_k"])
def test_sampling_parameters_are_rejected_by_the_current_version_even_at_defaults(name: str) -> None:
    value = 1 if name != "top_k" else 0
    message = one(req(**{name: value}), NEW)
    assert f"params.{name} is not accepted by API version 2026-10-21" in message
    assert "set the connection's anthropic_version to 2023-06-01" in message


def test_sampling_parameters_are_accepted_and_range_checked_by_2023_06_01() -> None:
    assert validate_request(req(temperature=0.7, top_p=0.9, top_k=40), api_version=OLD) == []
    assert "params.temperature must be a number between 0 and 1; got 1.5" in one(req(temperature=1.5), OLD)
    assert "params.top_p must be a number between 0 and 1" in one(req(top_p=-0.1), OLD)
    assert "params.top_k must be an integer >= 0" in one(req(top_k=1.5), OLD)


def test_document_in_an_assistant_message_depends_on_the_version() -> None:
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [doc]}]
    message = one(req(messages=messages), NEW)
    assert message.startswith("params.messages[1].content[0]: a document block in an assistant message")
    assert "2026-10-21" in message and "2023-06-01" in message
    assert validate_request(req(messages=messages), api_version=OLD) == []
    # In a user message a document is fine in both versions.
    assert validate_request(req(messages=[{"role": "user", "content": [doc]}]), api_version=NEW) == []


def test_citations_in_a_user_text_block_depend_on_the_version() -> None:
    block = {"type": "text", "text": "x", "citations": [{"type": "char_location"}]}
    messages = [{"role": "user", "content": [block]}]
    message = one(req(messages=messages), NEW)
    assert message.startswith("params.messages[0].content[0].citations:")
    assert "not accepted by API version 2026-10-21" in message
    assert validate_request(req(messages=messages), api_version=OLD) == []
    empty = [{"role": "user", "content": [{"type": "text", "text": "x", "citations": []}]}]
    assert validate_request(req(messages=empty), api_version=NEW) == []


def test_unknown_version_is_refused() -> None:
    assert check_api_version(NEW) is None
    assert "unknown anthropic-version '2024-01-01'" in (check_api_version("2024-01-01") or "")
    with pytest.raises(ValueError, match="2026-10-21, 2023-06-01"):
        validate_request(req(), api_version="2024-01-01")


def test_problem_names_the_custom_id_and_the_place() -> None:
    problems = validate_batch([req("ok"), req("q-17", temperature=0.5)], api_version=NEW)
    assert [str(p) for p in problems] == [
        "requests[1] custom_id q-17: params.temperature is not accepted by API version 2026-10-21 "
        "(even at its default value); remove it or set the connection's anthropic_version to 2023-06-01"
    ]
    where = ValidationProblem("bad", index=3, custom_id="q", file="in.jsonl", line=4)
    assert str(where) == "in.jsonl:4 custom_id q: bad"


@pytest.mark.smoke
def test_duplicate_custom_ids_point_at_the_first_use() -> None:
    checker = BatchChecker(api_version=NEW)
    assert checker.check(req("a"), file="in.jsonl", line=1) == []
    assert checker.check(req("b"), file="in.jsonl", line=2) == []
    [dup] = checker.check(req("a"), file="in.jsonl", line=3)
    assert str(dup).startswith("in.jsonl:3 custom_id a: custom_id is used more than once")
    assert "first at line 1" in dup.message
    assert checker.count == 3 and not checker.ok


def test_count_limit_is_reported_once_at_the_first_request_over_it() -> None:
    checker = BatchChecker(max_requests=MAX_REQUESTS)
    for i in range(MAX_REQUESTS + 3):
        checker.check({"custom_id": f"r{i}", "params": {"model": "m", "max_tokens": 1, "messages": "bad"}})
    over = [p for p in checker.problems if "more than 100,000 requests" in p.message]
    assert len(over) == 1 and over[0].index == MAX_REQUESTS


def test_empty_batch_and_body_size() -> None:
    assert "no requests" in validate_batch([])[0].message
    assert check_body_size(256 * 1024 * 1024) is None
    problem = check_body_size(256 * 1024 * 1024 + 1)
    assert problem is not None and "over the API's limit of 268,435,456 bytes" in problem.message

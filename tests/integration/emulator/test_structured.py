"""Structured outputs through the real emulator: JSON answers for ``output_config`` json_schema requests.

Batches are created over HTTP, ended with the emulator's clock and their results read
back, as a consumer (the table operator) will: every answer is checked against its
request's schema with ``jsonschema``, and the markers' refusals, cuts and violations are
checked to look like what a consumer has to handle.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_anthropix.emulator import (
    MAX_TOKENS_MARKER,
    REFUSAL_MARKER,
    SCHEMA_INVALID_MARKER,
    SCHEMA_INVALID_ONCE_MARKER,
    EmulatorHandle,
)
from airflow_provider_anthropix.emulator.structured import REFUSAL_TEXT
from tests.unit.emulator.test_structured import PERSON_SCHEMA, Person, schemas

BATCHES = "/v1/messages/batches"
_ids = itertools.count()


def request(custom_id: str, schema: Any, text: str = "Describe a person", **params: Any) -> dict[str, Any]:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 8192,
        "messages": [{"role": "user", "content": text}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
        **params,
    }
    return {"custom_id": custom_id, "params": body}


def results(emulator: EmulatorHandle, http: httpx.Client, requests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Create a batch, end it, return custom_id -> the succeeded result's Message."""
    response = http.post(BATCHES, json={"requests": requests})
    assert response.status_code == 200, response.text
    emulator.advance(1)
    found = {}
    for line in http.get(f"{BATCHES}/{response.json()['id']}/results").content.splitlines():
        item = json.loads(line)
        assert item["result"]["type"] == "succeeded", item
        found[item["custom_id"]] = item["result"]["message"]
    assert len(found) == len(requests)
    return found


def text_of(message: dict[str, Any]) -> str:
    blocks = [b for b in message["content"] if b["type"] == "text"]
    assert len(blocks) == 1
    return str(blocks[0]["text"])


def is_valid(schema: Any, text: str) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(json.loads(text))


@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(schemas(), min_size=1, max_size=12))
def test_every_answer_is_valid_against_its_schema(
    emulator: EmulatorHandle, emulator_http: httpx.Client, drawn: list[dict[str, Any]]
) -> None:
    batch = [request(f"gen-{next(_ids)}", schema) for schema in drawn]
    found = results(emulator, emulator_http, batch)
    for item, schema in zip(batch, drawn, strict=True):
        message = found[item["custom_id"]]
        text = text_of(message)
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(json.loads(text))]
        assert errors == [], (schema, text)
        assert message["stop_reason"] == "end_turn"
        assert message["usage"]["output_tokens"] == max(1, len(text) // 4)


def test_a_pydantic_model_schema(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch = [request(f"person-{i}", PERSON_SCHEMA, f"Describe person {i}") for i in range(40)]
    found = results(emulator, emulator_http, batch)
    texts = [text_of(found[item["custom_id"]]) for item in batch]
    people = [Person.model_validate_json(text, strict=True) for text in texts]
    assert len(set(texts)) == 40  # varied across requests
    assert {p.color for p in people} == set(type(people[0].color))
    assert 0 < sum(p.nickname is None for p in people) < 40


def test_same_seed_custom_id_attempt_and_request_give_the_same_answer(
    emulator: EmulatorHandle, emulator_http: httpx.Client
) -> None:
    batch = [request("same-1", PERSON_SCHEMA), request("same-2", PERSON_SCHEMA)]
    first = results(emulator, emulator_http, batch)
    emulator.reset_attempts()
    again = results(emulator, emulator_http, batch)
    assert [text_of(first[k]) for k in ("same-1", "same-2")] == [text_of(again[k]) for k in ("same-1", "same-2")]
    assert text_of(first["same-1"]) != text_of(first["same-2"])  # another custom_id, another answer
    second_attempt = results(emulator, emulator_http, batch)
    assert text_of(second_attempt["same-1"]) != text_of(first["same-1"])
    other_prompt = results(emulator, emulator_http, [request("same-1", PERSON_SCHEMA, "Describe someone else")])
    assert text_of(other_prompt["same-1"]) != text_of(second_attempt["same-1"])


def test_markers(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch = [
        request("m-refusal", PERSON_SCHEMA, f"Describe a person {REFUSAL_MARKER}"),
        request("m-cut", PERSON_SCHEMA, f"Describe a person {MAX_TOKENS_MARKER}", max_tokens=3000),
        request("m-invalid", PERSON_SCHEMA, f"Describe a person {SCHEMA_INVALID_MARKER}"),
    ]
    found = results(emulator, emulator_http, batch)
    refusal = found["m-refusal"]
    assert (refusal["stop_reason"], text_of(refusal)) == ("refusal", REFUSAL_TEXT)
    cut = found["m-cut"]
    assert (cut["stop_reason"], cut["usage"]["output_tokens"]) == ("max_tokens", 3000)
    assert text_of(cut).startswith('{"name":"')  # the JSON's first half (compact, as msgspec writes it)
    with pytest.raises(ValueError):
        json.loads(text_of(cut))
    invalid = found["m-invalid"]
    assert invalid["stop_reason"] == "end_turn"
    assert not is_valid(PERSON_SCHEMA, text_of(invalid))  # parses, breaks the schema


def test_a_transient_violation_is_fixed_by_a_retry_round(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    prompt = f"Describe a person {SCHEMA_INVALID_ONCE_MARKER}"
    first = results(emulator, emulator_http, [request("t-1", PERSON_SCHEMA, prompt), request("t-ok", PERSON_SCHEMA)])
    assert not is_valid(PERSON_SCHEMA, text_of(first["t-1"]))
    assert is_valid(PERSON_SCHEMA, text_of(first["t-ok"]))
    assert emulator.attempts("t-1") == 1
    retry = results(emulator, emulator_http, [request("t-1", PERSON_SCHEMA, prompt)])  # the retry round
    assert emulator.attempts("t-1") == 2
    Person.model_validate_json(text_of(retry["t-1"]), strict=True)


def test_thinking_blocks_come_first(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch = [
        request("think-on", PERSON_SCHEMA, thinking={"type": "enabled", "budget_tokens": 2048}),
        request("think-adaptive", PERSON_SCHEMA, thinking={"type": "adaptive"}),
        request("think-off", PERSON_SCHEMA, thinking={"type": "disabled"}),
    ]
    found = results(emulator, emulator_http, batch)
    for custom_id in ("think-on", "think-adaptive"):
        content = found[custom_id]["content"]
        assert [b["type"] for b in content] == ["thinking", "text"]
        assert content[0]["thinking"] and content[0]["signature"]
        Person.model_validate_json(content[1]["text"], strict=True)
    assert [b["type"] for b in found["think-off"]["content"]] == ["text"]


def test_requests_without_a_json_schema_format_are_answered_as_before(
    emulator: EmulatorHandle, emulator_http: httpx.Client
) -> None:
    plain = request("plain", PERSON_SCHEMA, f"Name a river {REFUSAL_MARKER}")
    del plain["params"]["output_config"]
    effort = request("effort", PERSON_SCHEMA, "Name a river")
    effort["params"]["output_config"] = {"effort": "low"}
    found = results(emulator, emulator_http, [plain, effort])
    assert text_of(found["plain"]).startswith(f"Emulated reply to: Name a river {REFUSAL_MARKER}")
    assert text_of(found["effort"]).startswith("Emulated reply to: Name a river")
    assert {m["stop_reason"] for m in found.values()} == {"end_turn"}

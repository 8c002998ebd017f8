"""The typed fast path of answer checking (``table/typed.py``): never more lenient than the checker, same values.

Each schema's answers (drawn valid and broken by the emulator's generator, plus hand-made edge
cases: ``3.0`` for an integer, ``true`` for a number, null for an optional field, keys twice,
lengths in code points...) are read twice by :class:`AnswerReader`, with and without the fast
path: the columns, outcomes and errors must be equal. Schemas it cannot check exactly get no
fast path at all.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pyarrow as pa
import pytest

from airflow_provider_anthropix.emulator.structured import value_breaking_schema, value_for_schema
from airflow_provider_anthropix.table import answers as answers_module
from airflow_provider_anthropix.table.answers import AnswerLayout, AnswerReader, parse_answer
from airflow_provider_anthropix.table.schema import compile_checker
from airflow_provider_anthropix.table.typed import typed_values

BENCH = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "topics": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "summary": {"type": "string", "maxLength": 20},
    },
    "required": ["sentiment", "score", "topics", "summary"],
    "additionalProperties": False,
}
WIDE = {
    "type": "object",
    "properties": {
        "label": {"enum": ["a", "b"]},
        "weight": {"type": "number", "minimum": 0.5, "maximum": 2.5},
        "count": {"type": "integer", "minimum": -1.5},
        "flag": {"type": "boolean"},
        "note": {"anyOf": [{"type": "string", "minLength": 2}, {"type": "null"}], "default": None, "title": "Note"},
        "tags": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
        "loose": {"type": "array"},
        "inner": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "array", "items": {"type": "string"}}},
            "required": ["x"],
            "additionalProperties": False,
        },
        "rows": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
        "any thing": {
            "description": "keywords the checker ignores",
            "type": "string",
            "format": "date",
            "pattern": "^x",
        },
    },
    "required": ["label", "weight"],
}


def hand_made(schema: dict[str, Any]) -> list[str]:
    """Answers at the edges of what each type accepts."""
    if schema is BENCH:
        good = {"sentiment": "neutral", "score": 3, "topics": ["a"], "summary": "ok"}
        return [
            json.dumps(good),
            json.dumps({**good, "score": 3.0}),  # an integer written as a float: valid to the checker
            json.dumps({**good, "score": True}),
            json.dumps({**good, "score": 11}),
            json.dumps({**good, "extra": 1}),
            json.dumps({k: v for k, v in good.items() if k != "topics"}),
            json.dumps({**good, "summary": "\U0001f600" * 20}),  # 20 code points
            json.dumps({**good, "summary": "\U0001f600" * 21}),
            json.dumps({**good, "topics": ["a"] * 6}),
            json.dumps({**good, "topics": [1]}),
            '{"sentiment": "bad", "sentiment": "neutral", "score": 3, "topics": [], "summary": ""}',
            '{"sentiment": "neutral", "sentiment": "bad", "score": 3, "topics": [], "summary": ""}',
            json.dumps({**good, "score": 2**70}),
            "[1, 2]",
            "not json",
            '{"sentiment": "neutral"',
        ]
    good = {"label": "a", "weight": 1}
    return [
        json.dumps(good),
        json.dumps({**good, "weight": 2.5, "count": -1, "flag": False, "note": None}),
        json.dumps({**good, "weight": 0.4}),
        json.dumps({**good, "weight": True}),
        json.dumps({**good, "count": -2}),
        json.dumps({**good, "count": 4.0}),
        json.dumps({**good, "note": "x"}),
        json.dumps({**good, "note": "xy", "tags": [1, 2], "loose": [1, "a", None, {"b": [2]}]}),
        json.dumps({**good, "tags": []}),
        json.dumps({**good, "tags": [1.0]}),
        json.dumps({**good, "inner": {"x": 1, "y": ["q"]}}),
        json.dumps({**good, "inner": {"x": 1.5, "z": 0}}),
        json.dumps({**good, "inner": {"y": []}}),
        json.dumps({**good, "inner": None}),
        json.dumps({**good, "rows": [{"k": "v", "other": 1}, {}]}),
        json.dumps({**good, "rows": [{"k": 1}]}),
        json.dumps({**good, "unknown": {"deep": [1]}}),
        json.dumps({**good, "any thing": "2024-01-01"}),
        json.dumps({**good, "label": "c"}),
        json.dumps({"weight": 1}),
    ]


def result_lines(schema: dict[str, Any], seed: int) -> bytes:
    rng = random.Random(seed)
    texts = hand_made(schema)
    for _ in range(300):
        value = value_for_schema(schema, rng)
        if rng.random() < 0.4:
            value = value_breaking_schema(schema, value, rng)
        texts.append(json.dumps(value))
    lines = []
    for i, text in enumerate(texts):
        stop = ["end_turn", "end_turn", "end_turn", "max_tokens", "refusal"][i % 5] if i >= 40 else "end_turn"
        message = {"model": "claude-haiku-4-5", "content": [{"type": "text", "text": text}], "stop_reason": stop}
        lines.append(json.dumps({"custom_id": f"c{i}", "result": {"type": "succeeded", "message": message}}))
    return ("\n".join(lines) + "\n").encode()


def read(schema: dict[str, Any], data: bytes) -> pa.Table:
    reader = AnswerReader(AnswerLayout(schema))
    reader.read([data], batch_id="b")
    return reader.finish()


@pytest.mark.parametrize("schema", [BENCH, WIDE], ids=["bench", "wide"])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_fast_path_gives_the_checkers_outcomes_and_values(
    schema: dict[str, Any], seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert typed_values(schema) is not None  # else this test would compare the checker with itself
    data = result_lines(schema, seed)
    fast = read(schema, data)
    monkeypatch.setattr(answers_module, "typed_values", lambda schema: None)
    plain = read(schema, data)
    assert fast.column("_result_type").to_pylist() == plain.column("_result_type").to_pylist()
    assert fast.column("_error").to_pylist() == plain.column("_error").to_pylist()
    assert fast.equals(plain)
    kinds = set(plain.column("_result_type").to_pylist())
    assert kinds == {"succeeded", "invalid_output"}  # both kinds were really exercised


@pytest.mark.parametrize("schema", [BENCH, WIDE], ids=["bench", "wide"])
def test_the_fast_path_accepts_nothing_the_checker_refuses(schema: dict[str, Any]) -> None:
    typed = typed_values(schema)
    assert typed is not None
    checker = compile_checker(schema)
    accepted = refused = 0
    for text in result_lines(schema, 3).decode().splitlines():
        answer = json.loads(text)["result"]["message"]["content"][0]["text"]
        try:
            values = typed(answer)
        except Exception:
            refused += 1
            continue
        accepted += 1
        assert parse_answer(checker, answer, "end_turn")[1] is None, answer
        assert len(values) == len(schema["properties"])  # (the values themselves: the test above)
    assert accepted > 50 and refused > 50


@pytest.mark.parametrize(
    "node",
    [
        {"type": "string", "const": "x"},
        {"type": ["string", "null"]},
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        {"anyOf": [{"type": "string"}, {"type": "null"}], "type": "string"},
        {"oneOf": [{"type": "string"}, {"type": "null"}, {"type": "integer"}]},
        {"$ref": "#/$defs/X"},
        {"type": "integer", "enum": [1, 2]},
        {"enum": ["a", 1]},
        {"type": "string", "enum": ["a"], "maxLength": 3},
        {"type": "object"},
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
        {"type": "array", "items": [{"type": "string"}]},
        {"type": "string", "maxLength": 2.0},
        {"type": "integer", "minimum": True},
        {"description": "anything"},
        {"type": "null"},
    ],
)
def test_schemas_it_cannot_check_exactly_get_no_fast_path(node: dict[str, Any]) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "string"}, "odd": node},
        "$defs": {"X": {"type": "string"}},
    }
    assert typed_values(schema) is None

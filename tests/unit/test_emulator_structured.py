"""The emulator's JSON answers to structured-output requests, checked on the generator alone.

Every generated value is checked with ``jsonschema`` (the reference validator) and, for
a Pydantic model's schema, with the model itself: the emulator's answers are what
consumers' tests parse, so a value the schema refuses would make those tests lie.
"""

from __future__ import annotations

import enum
import json
import random
from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from airflow_provider_anthropix.emulator import (
    MAX_TOKENS_MARKER,
    REFUSAL_MARKER,
    SCHEMA_INVALID_MARKER,
    SCHEMA_INVALID_ONCE_MARKER,
)
from airflow_provider_anthropix.emulator.structured import (
    MAX_TOKENS,
    REFUSAL,
    REFUSAL_TEXT,
    SCHEMA_INVALID,
    VALID,
    StructuredPlan,
    answer,
    cut_json,
    json_text,
    plan_answer,
    value_breaking_schema,
    value_for_schema,
)

# -- schemas users send, drawn by hypothesis -------------------------------------------------
_names = st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=8))


@st.composite
def _bounded(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """An integer or number schema whose bounds leave room for a value (inclusive or exclusive)."""
    schema: dict[str, Any] = {"type": kind}
    low = draw(st.integers(-100, 100))
    high = low + draw(st.integers(2, 200))
    if kind == "number" and draw(st.booleans()):
        low, high = low / 4, high / 4 + 0.5
    if draw(st.booleans()):
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = high
    if kind == "integer" and draw(st.booleans()) and high - low >= 12:
        schema["multipleOf"] = draw(st.integers(1, 5))
    return schema


def _string() -> st.SearchStrategy[dict[str, Any]]:
    lengths = st.tuples(st.integers(0, 6), st.integers(0, 30)).map(lambda t: (t[0], t[0] + t[1]))
    return st.builds(
        lambda bounds, use_min, use_max, fmt: {
            "type": "string",
            **({"minLength": bounds[0]} if use_min else {}),
            **({"maxLength": bounds[1]} if use_max else {}),
            **({"format": fmt} if fmt else {}),
        },
        lengths,
        st.booleans(),
        st.booleans(),
        st.sampled_from([None, None, "date-time", "date", "email", "uuid", "uri"]),
    )


_leaves = st.one_of(
    _string(),
    _bounded("integer"),
    _bounded("number"),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(_scalars, min_size=1, max_size=5, unique_by=json.dumps).map(lambda values: {"enum": values}),
    _scalars.map(lambda value: {"const": value}),
    st.sampled_from([["string", "null"], ["integer", "null"], ["number", "string"], ["boolean", "null"]]).map(
        lambda kinds: {"type": kinds}
    ),
    st.just({}),
)


@st.composite
def _object(draw: st.DrawFn, children: st.SearchStrategy[Any], *, root: bool = False) -> dict[str, Any]:
    properties = draw(st.dictionaries(_names, children, min_size=1 if root else 0, max_size=5))
    required = [name for name in properties if draw(st.booleans())]
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if draw(st.booleans()):
        schema["additionalProperties"] = False
    return schema


@st.composite
def _array(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": draw(children)}
    low = draw(st.integers(0, 3))
    if draw(st.booleans()):
        schema["minItems"] = low
    if draw(st.booleans()):
        schema["maxItems"] = low + draw(st.integers(0, 3))
    return schema


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        _object(children),
        _array(children),
        st.lists(children, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches}),
        children.map(lambda child: {"anyOf": [child, {"type": "null"}]}),  # Optional[...]
    )


_subschemas = st.recursive(_leaves, _containers, max_leaves=12)


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A root object schema (what the API takes) with nested shapes and ``$ref`` to ``$defs``."""
    defs = draw(st.dictionaries(st.from_regex(r"[A-Z][a-z]{0,6}", fullmatch=True), _subschemas, max_size=3))
    refs = [{"$ref": f"#/$defs/{name}"} for name in defs]
    children = st.one_of(_subschemas, *([st.sampled_from(refs)] if refs else []))
    schema = draw(_object(children, root=True))
    if defs:
        schema["$defs"] = defs
    return schema


def valid(schema: Any, value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def errors(schema: Any, value: Any) -> list[str]:
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(value)]


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas(), st.integers(0, 2**32))
def test_values_are_valid_and_broken_ones_are_not(schema: dict[str, Any], seed: int) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    value = value_for_schema(schema, random.Random(seed))
    assert errors(schema, value) == [], json.dumps(value)
    assert json.loads(json_text(schema, random.Random(seed))) == value
    rng = random.Random(seed)
    broken = value_breaking_schema(schema, value_for_schema(schema, rng), rng)
    assert not valid(schema, json.loads(json.dumps(broken))), json.dumps(broken)


# -- a Pydantic model's schema -------------------------------------------------------------
class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Address(BaseModel):
    street: str = Field(min_length=3, max_length=40)
    city: str
    postcode: str | None = None


class Node(BaseModel):
    label: str
    children: list[Node] = []


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    score: float = Field(gt=0, lt=1)
    color: Color
    tags: list[str] = Field(min_length=1, max_length=4)
    address: Address
    previous: list[Address] = []
    nickname: str | None = None
    kind: Literal["customer", "supplier"]
    born: date
    seen: datetime
    token: UUID
    counts: dict[str, int] = {}
    tree: Node | None = None


PERSON_SCHEMA = Person.model_json_schema()


def test_pydantic_schemas_give_values_the_model_accepts() -> None:
    values = [value_for_schema(PERSON_SCHEMA, random.Random(seed)) for seed in range(200)]
    for value in values:
        assert errors(PERSON_SCHEMA, value) == []
        Person.model_validate_json(json.dumps(value), strict=True)
    # Optional fields are sometimes there and sometimes not; enums and nested models vary.
    for field in ("nickname", "previous", "counts", "tree"):
        present = sum(field in v for v in values)
        assert 20 < present < 180, (field, present)
    assert {v["color"] for v in values} == {"red", "green", "blue"}
    assert {v["nickname"] is None for v in values if "nickname" in v} == {True, False}
    assert len({v["address"]["street"] for v in values}) > 50
    assert any(v.get("tree") and v["tree"]["children"] for v in values)  # the recursive model nests


def test_a_broken_pydantic_value_is_refused_by_the_model() -> None:
    for seed in range(100):
        rng = random.Random(seed)
        broken = value_breaking_schema(PERSON_SCHEMA, value_for_schema(PERSON_SCHEMA, rng), rng)
        assert not valid(PERSON_SCHEMA, broken)
        with pytest.raises(ValueError, match="validation error"):  # strict: lax mode takes true for 1
            Person.model_validate_json(json.dumps(broken), strict=True)


def test_values_are_deterministic_per_seed_and_vary_across_seeds() -> None:
    first = [json_text(PERSON_SCHEMA, random.Random(seed)) for seed in range(50)]
    again = [json_text(PERSON_SCHEMA, random.Random(seed)) for seed in range(50)]
    assert first == again
    assert len(set(first)) == 50


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^[A-Z]{3}$"},  # pattern: not understood, any string
        {"not": {"type": "string"}},
        {"$ref": "#/$defs/Missing"},
        {"$ref": "https://example.com/schema.json"},
        {"$ref": "#"},  # a schema that is only itself
        {"$defs": {"A": {"allOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/A"}]}}, "$ref": "#/$defs/A"},
        {"type": 5, "properties": [1, 2], "required": "name", "enum": {}},
        {"type": "object", "properties": {"a": 5, "b": None}, "required": ["a", "b", 7]},
        {"type": "array", "minItems": 10**9, "items": {"type": "array", "minItems": 10**9}},
        {"type": "string", "minLength": 10**12, "format": ["date"]},
        {"type": "integer", "minimum": 1e308, "maximum": float("inf"), "multipleOf": 0},
        {"type": "number", "exclusiveMinimum": 1, "exclusiveMaximum": 1},
        {"type": "array", "items": {"enum": [1]}, "minItems": 3, "uniqueItems": True},
        {"enum": []},
        False,
        True,
        "not a schema",
        None,
    ],
)
def test_odd_schemas_never_crash(schema: Any) -> None:
    for breaking in (False, True):
        text = json_text(schema, random.Random(1), breaking=breaking)
        json.loads(text)
        assert len(text) < 1_000_000


@pytest.mark.parametrize(
    ("schema", "only"),
    [
        ({"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 5}, 4),
        ({"type": "integer", "minimum": 2.5, "maximum": 3.5}, 3),
        ({"type": "integer", "minimum": 10, "maximum": 14, "multipleOf": 4}, 12),
        ({"type": "integer", "minimum": 7, "maximum": 7}, 7),
        ({"type": "number", "minimum": 0.5, "maximum": 0.5}, 0.5),
        ({"type": "string", "minLength": 7, "maxLength": 7}, None),
        ({"type": "array", "minItems": 2, "maxItems": 2, "items": {"const": 1}}, [1, 1]),
        ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.01}, None),
    ],
)
def test_narrow_bounds(schema: dict[str, Any], only: Any) -> None:
    for seed in range(50):
        value = value_for_schema(schema, random.Random(seed))
        assert valid(schema, value), value
        if only is not None:
            assert value == only


def test_recursive_schemas_end() -> None:
    schema = {
        "$defs": {"Tree": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Tree"}}}, "required": ["kids"]}},
        "$ref": "#/$defs/Tree",
    }  # fmt: skip
    for seed in range(30):
        assert valid(schema, value_for_schema(schema, random.Random(seed)))


@pytest.mark.parametrize(
    "text", ['{"a": [1, 2, {"b": "c"}]}', "42", "12345.5", '"a string"', "true", "null", "[]", "{}"]
)
def test_a_cut_never_parses(text: str) -> None:
    cut = cut_json(text)
    assert text.startswith(cut)
    with pytest.raises(ValueError):
        json.loads(cut)


# -- plans and answers -----------------------------------------------------------------------
CONFIG = {"format": {"type": "json_schema", "schema": PERSON_SCHEMA}}


def plan(
    text: str = "Describe a person", attempt: int = 1, *, seed: int = 0, custom_id: str = "q-1"
) -> StructuredPlan | None:
    return plan_answer(CONFIG, None, text, seed=seed, custom_id=custom_id, attempt=attempt)


def test_only_a_json_schema_format_makes_a_plan() -> None:
    assert plan_answer({"effort": "low"}, None, "x", seed=0, custom_id="a", attempt=1) is None
    assert plan_answer({"format": {"type": "text"}}, None, "x", seed=0, custom_id="a", attempt=1) is None
    assert plan_answer(None, None, "x", seed=0, custom_id="a", attempt=1) is None
    assert plan() is not None


def test_the_seed_depends_on_seed_custom_id_attempt_and_request() -> None:
    base = plan()
    assert base is not None
    assert plan() == base
    others = [plan(seed=1), plan(custom_id="q-2"), plan(attempt=2), plan(text="Describe another person")]
    assert len({base.seed, *(p.seed for p in others if p is not None)}) == 5


@pytest.mark.parametrize(
    ("marker", "forms"),
    [
        (REFUSAL_MARKER, [REFUSAL, REFUSAL, REFUSAL]),
        (MAX_TOKENS_MARKER, [MAX_TOKENS, MAX_TOKENS, MAX_TOKENS]),
        (SCHEMA_INVALID_MARKER, [SCHEMA_INVALID, SCHEMA_INVALID, SCHEMA_INVALID]),
        (SCHEMA_INVALID_ONCE_MARKER, [SCHEMA_INVALID, VALID, VALID]),
        ("[[emulator:schema-invalid-times:2]]", [SCHEMA_INVALID, SCHEMA_INVALID, VALID]),
        ("[[emulator:refusal-once]]", [REFUSAL, VALID, VALID]),
        ("[[emulator:errored-once]]", [VALID, VALID, VALID]),  # an outcome marker, not this module's
    ],
)
def test_markers_choose_the_form_by_attempt(marker: str, forms: list[str]) -> None:
    found = [plan(f"Describe a person {marker}", attempt=n) for n in (1, 2, 3)]
    assert [p.form if p else None for p in found] == forms


def _answer(form: str, *, thinking: bool = False, max_tokens: int = 4096) -> tuple[list[dict[str, Any]], str, int]:
    return answer(StructuredPlan(PERSON_SCHEMA, 7, form, thinking), "Describe a person", max_tokens)


def test_a_valid_answer_counts_its_tokens() -> None:
    content, stop_reason, tokens = _answer(VALID)
    assert stop_reason == "end_turn"
    assert [b["type"] for b in content] == ["text"]
    Person.model_validate_json(content[0]["text"])
    assert tokens == len(content[0]["text"]) // 4


def test_thinking_comes_first_then_the_json() -> None:
    content, stop_reason, tokens = _answer(VALID, thinking=True)
    assert [b["type"] for b in content] == ["thinking", "text"]
    assert content[0]["thinking"] and content[0]["signature"]
    Person.model_validate_json(content[1]["text"])
    assert tokens == (len(content[0]["thinking"]) + len(content[1]["text"])) // 4
    assert stop_reason == "end_turn"


def test_refusal_cut_and_invalid_answers() -> None:
    content, stop_reason, _ = _answer(REFUSAL)
    assert (stop_reason, content[0]["text"]) == ("refusal", REFUSAL_TEXT)
    content, stop_reason, tokens = _answer(MAX_TOKENS, max_tokens=2000)
    assert (stop_reason, tokens) == ("max_tokens", 2000)
    with pytest.raises(ValueError):
        json.loads(content[0]["text"])
    content, stop_reason, _ = _answer(SCHEMA_INVALID)
    assert stop_reason == "end_turn"
    assert not valid(PERSON_SCHEMA, json.loads(content[0]["text"]))


def test_an_answer_longer_than_max_tokens_is_cut_there() -> None:
    content, stop_reason, tokens = _answer(VALID, max_tokens=10)
    assert (stop_reason, tokens) == ("max_tokens", 10)
    assert len(content[0]["text"]) == 40

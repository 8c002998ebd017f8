"""The answer schema: the compiled checker agrees with jsonschema, and each property gets the Arrow type users expect."""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
import pyarrow as pa
import pytest
from pydantic import BaseModel

from airflow_provider_anthropix.table.schema import (
    SchemaError,
    answer_fields,
    arrow_type,
    compile_checker,
    resolve_schema,
)


class Inner(BaseModel):
    name: str
    weight: float | None = None


class Review(BaseModel):
    sentiment: Literal["positive", "negative"]
    score: int
    topics: list[str]
    flagged: bool
    detail: Inner
    note: str | None = None


SCHEMA = resolve_schema(Review)

VALUES: list[Any] = [
    {"sentiment": "positive", "score": 3, "topics": ["a"], "flagged": False, "detail": {"name": "x"}},
    {
        "sentiment": "negative",
        "score": 1,
        "topics": [],
        "flagged": True,
        "detail": {"name": "x", "weight": 2},
        "note": None,
    },
    {"sentiment": "meh", "score": 3, "topics": [], "flagged": False, "detail": {"name": "x"}},
    {"sentiment": "positive", "score": 3.5, "topics": [], "flagged": False, "detail": {"name": "x"}},
    {"sentiment": "positive", "score": True, "topics": [], "flagged": False, "detail": {"name": "x"}},
    {"sentiment": "positive", "score": 3, "topics": [1], "flagged": False, "detail": {"name": "x"}},
    {"sentiment": "positive", "score": 3, "topics": [], "flagged": False, "detail": {}},
    {"sentiment": "positive", "score": 3, "topics": [], "flagged": False},
    {"sentiment": "positive", "score": 3, "topics": [], "flagged": "no", "detail": {"name": "x"}},
    [],
    "text",
]


@pytest.mark.parametrize("value", VALUES)
def test_the_checker_agrees_with_jsonschema(value: Any) -> None:
    expected_valid = jsonschema.Draft202012Validator(SCHEMA).is_valid(value)
    problem = compile_checker(SCHEMA)(value, "$")
    assert (problem is None) == expected_valid, problem


def test_a_problem_names_where_it_is() -> None:
    problem = compile_checker(SCHEMA)(VALUES[5], "$")
    assert problem is not None and problem.startswith("$.topics[0]")


def test_arrow_types_follow_the_schema() -> None:
    types = {name: arrow_type(node, SCHEMA) for name, node in answer_fields(SCHEMA)}
    assert types["sentiment"] == pa.string()
    assert types["score"] == pa.int64()
    assert types["topics"] == pa.list_(pa.string())
    assert types["flagged"] == pa.bool_()
    assert types["detail"] == pa.struct([pa.field("name", pa.string()), pa.field("weight", pa.float64())])
    assert types["note"] == pa.string()


@pytest.mark.parametrize(
    "bad", [{"type": "string"}, {"type": "object", "properties": {}}, 42, {"$ref": "#/$defs/Nope"}]
)
def test_a_schema_that_cannot_become_columns_is_refused(bad: Any) -> None:
    with pytest.raises(SchemaError):
        resolve_schema(bad)

"""Compiled schemas, cheap draws and model-like wording: what makes a million structured answers cheap.

The validity of every generated value is tested in test_structured.py (hypothesis and
Pydantic schemas); here: answers look like a model's for a table job's schema, each
distinct schema is compiled once and shared, and an answer depends only on its request,
in any process and whatever was answered before.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from airflow_provider_anthropix.emulator.draws import Draws, draws_from
from airflow_provider_anthropix.emulator.schema_values import compile_schema, schema_key
from airflow_provider_anthropix.emulator.structured import StructuredPlan, answer, json_text, plan_answer
from airflow_provider_anthropix.emulator.wording import prose
from tests.support.paths import REPO

#: The table benchmark's schema: what a table job sends with each of its rows.
TRIAGE = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "topics": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "summary": {"type": "string", "maxLength": 200},
    },
    "required": ["sentiment", "score", "topics", "summary"],
    "additionalProperties": False,
}


def triage_answers(count: int) -> list[dict[str, Any]]:
    config = {"format": {"type": "json_schema", "schema": TRIAGE}}
    out = []
    for i in range(count):
        plan = plan_answer(config, None, f"Triage review {i}", seed=0, custom_id=f"row-{i}", attempt=1)
        assert plan is not None
        content, stop_reason, _ = answer(plan, "Triage", 300)
        assert stop_reason == "end_turn"
        out.append(json.loads(content[0]["text"]))
    return out


def test_answers_to_a_table_schema_look_like_a_models() -> None:
    values = triage_answers(500)
    validator = jsonschema.Draft202012Validator(TRIAGE)
    for value in values:
        assert list(validator.iter_errors(value)) == [], value
        summary = value["summary"]
        assert 40 <= len(summary) <= 200 and summary.endswith("."), summary  # a sentence, not a few words
        assert summary[0].isupper() and len(summary.split()) >= 8, summary
        assert 1 <= len(value["topics"]) <= 3, value["topics"]
        assert all(1 <= len(topic.split()) <= 4 for topic in value["topics"]), value["topics"]
    assert {len(v["topics"]) for v in values} == {1, 2, 3}
    assert sum(len(set(v["topics"])) == len(v["topics"]) for v in values) > 490  # a topic is rarely repeated
    assert len({v["summary"] for v in values}) > 450  # varied across requests
    assert {v["sentiment"] for v in values} == {"positive", "neutral", "negative"}
    assert {v["score"] for v in values} == set(range(1, 11))
    assert any(v["summary"].count(". ") == 1 for v in values)  # two sentences sometimes


@pytest.mark.parametrize(("low", "high"), [(0, 1), (0, 5), (0, 30), (3, 3), (20, 25), (90, 95), (150, None), (0, 0)])
def test_prose_keeps_to_its_lengths(low: int, high: int | None) -> None:
    for seed in range(200):
        text = prose(Draws(seed), low, high)
        assert len(text) >= low, text
        assert high is None or len(text) <= high, text


def test_equal_schemas_share_one_compiled_form_and_order_matters() -> None:
    first, again = TRIAGE, copy.deepcopy(TRIAGE)
    assert compile_schema(first) is compile_schema(again)
    reordered = {**TRIAGE, "properties": dict(reversed(list(TRIAGE["properties"].items())))}
    assert schema_key(reordered) != schema_key(TRIAGE)
    assert compile_schema(reordered) is not compile_schema(TRIAGE)
    assert list(json.loads(json_text(reordered, 5))) == ["summary", "topics", "score", "sentiment"]


def test_plans_of_equal_schemas_hold_one_schema_object() -> None:
    """A batch of 100,000 requests keeps one copy of their schema, not 100,000."""
    plans = [
        plan_answer({"format": {"type": "json_schema", "schema": copy.deepcopy(TRIAGE)}}, None, "x", seed=0,
                    custom_id=f"q-{i}", attempt=1)
        for i in range(3)
    ]  # fmt: skip
    assert all(p is not None for p in plans)
    assert len({id(p.schema) for p in plans if p is not None}) == 1


def test_an_answer_does_not_depend_on_what_was_answered_before() -> None:
    """Nodes compile lazily, as answers reach them; that must not change any answer."""
    schema = {
        "$defs": {"Tree": {"type": "object", "properties": {"label": {"type": "string"},
                  "kids": {"type": "array", "items": {"$ref": "#/$defs/Tree"}}}, "required": ["label", "kids"]}},
        "$ref": "#/$defs/Tree",
        "title": "fresh-for-this-test",
    }  # fmt: skip
    late = json_text(schema, 99)  # compiled on this answer's path only
    compiled = compile_schema(schema)
    for seed in range(50):
        compiled.value(Draws(seed))  # more of the tree compiled
    assert json_text(schema, 99) == late
    assert json_text(copy.deepcopy(schema), 99) == late


_IN_ANOTHER_PROCESS = """
import json, sys
from airflow_provider_anthropix.emulator.structured import answer, plan_answer
schema = json.loads(sys.argv[1])
config = {"format": {"type": "json_schema", "schema": schema}}
texts = []
for i in range(20):
    plan = plan_answer(config, None, f"Triage review {i}", seed=3, custom_id=f"row-{i}", attempt=1)
    texts.append(answer(plan, "Triage", 300)[0][0]["text"])
print(json.dumps(texts))
"""


def test_answers_are_the_same_in_another_process() -> None:
    config = {"format": {"type": "json_schema", "schema": TRIAGE}}
    here = []
    for i in range(20):
        plan = plan_answer(config, None, f"Triage review {i}", seed=3, custom_id=f"row-{i}", attempt=1)
        assert plan is not None
        here.append(answer(plan, "Triage", 300)[0][0]["text"])
    for hash_seed in ("1", "2"):  # string hashing differs between the two: answers must not
        done = subprocess.run(
            [sys.executable, "-c", _IN_ANOTHER_PROCESS, json.dumps(TRIAGE)],
            capture_output=True, text=True, check=True, cwd=REPO, env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )  # fmt: skip
        assert json.loads(done.stdout) == here


def test_draws_repeat_per_seed_and_stay_in_range() -> None:
    first = Draws(42)
    again = Draws(42)
    values = [first.below(10) for _ in range(1000)]
    assert values == [again.below(10) for _ in range(1000)]
    assert set(values) == set(range(10))
    assert [Draws(1).below(1 << 20) for _ in range(3)] != [Draws(2).below(1 << 20) for _ in range(3)]
    huge = 10**40
    assert all(0 <= first.below(huge) < huge for _ in range(100))
    assert all(0.0 <= first.unit() < 1.0 for _ in range(1000))
    assert draws_from(first) is first
    with pytest.raises(TypeError):
        draws_from("seed")


def test_a_plan_with_a_compiled_schema_answers_like_one_without() -> None:
    plan = plan_answer(
        {"format": {"type": "json_schema", "schema": TRIAGE}}, None, "x", seed=0, custom_id="a", attempt=1
    )
    assert plan is not None and plan.compiled is not None
    bare = StructuredPlan(TRIAGE, plan.seed, plan.form, plan.thinking)
    assert answer(plan, "s", 300) == answer(bare, "s", 300)

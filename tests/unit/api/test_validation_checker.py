"""A duplicate custom_id names where the id was first used: its line, or its index when requests have no line."""

from __future__ import annotations

from typing import Any

from airflow_provider_anthropix.api.validation import BatchChecker, validate_batch


def request(custom_id: str) -> dict[str, Any]:
    params = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    return {"custom_id": custom_id, "params": params}


def duplicate_messages(problems: list[Any]) -> list[str]:
    return [p.message for p in problems if "more than once" in p.message]


def test_without_lines_the_first_use_is_named_by_its_index() -> None:
    problems = validate_batch([request("a"), request("b"), request("c"), request("b"), request("a")])
    assert duplicate_messages(problems) == [
        "custom_id is used more than once in the batch (first at requests[1]); custom_ids must be unique",
        "custom_id is used more than once in the batch (first at requests[0]); custom_ids must be unique",
    ]


def test_with_lines_the_first_use_is_named_by_its_line_also_on_the_slow_path() -> None:
    checker = BatchChecker()
    checker.check(request("x"), file="f", line=7)
    checker.check({**request("y"), "extra": 1}, file="f", line=9)  # not plainly valid: the full validator
    checker.check(request("x"), file="f", line=12)
    found = checker.check({**request("y"), "extra": 2}, file="f", line=20)
    assert duplicate_messages(checker.problems) == [
        "custom_id is used more than once in the batch (first at line 7); custom_ids must be unique",
        "custom_id is used more than once in the batch (first at line 9); custom_ids must be unique",
    ]
    assert [p.line for p in found] == [20, 20]


def test_a_custom_id_ending_in_a_newline_is_refused_on_the_fast_path_too() -> None:
    """The pattern's ``$`` accepts a trailing newline under ``re.match``: the checker must match the whole id."""
    params = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    problems = BatchChecker().check({"custom_id": "ends-in-a-newline\n", "params": params})
    assert len(problems) == 1 and problems[0].message.startswith("custom_id"), problems

"""The checker's fast path for plain dicts must agree with the full validator, rule for rule.

``BatchChecker.check`` answers most requests with a tight check of exact types; anything it
is not sure of goes through :func:`validate_request`. The rule is one-sided: the fast path may
send a valid request to the full check, never pass one the full check refuses. This runs the
emulator intake's table of subtle cases and the bad-input corpus through both.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import pytest

from airflow_provider_anthropix.api.validation import BatchChecker, _plainly_valid, validate_request
from tests.support.paths import DATA
from tests.unit.emulator.test_intake import CASES, VERSIONS, good

CORPUS = DATA / "bad_inputs" / "requests"

MORE_CASES: dict[str, Any] = {
    "custom-id-null": {"custom_id": None, "params": good()["params"]},
    "custom-id-empty": good(""),
    "custom-id-64": good("x" * 64),
    "params-null": {"custom_id": "a", "params": None},
    "custom-id-missing": {"params": good()["params"], "x": 1},
    "params-ordered-dict": {"custom_id": "a", "params": OrderedDict(good()["params"])},
    "message-ordered-dict": good(messages=[OrderedDict(role="user", content="hi")]),
    "assistant-second": good(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
    "user-twice": good(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
    "role-bad-second": good(messages=[{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]),
    "role-null-second": good(messages=[{"role": "user", "content": "a"}, {"content": "b"}]),
    "content-tuple": good(messages=[{"role": "user", "content": ("a",)}]),
    "messages-tuple": good(messages=({"role": "user", "content": "a"},)),
    "max-tokens-float-big": good(max_tokens=1e9),
    "thinking-enabled": good(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048}),
    "thinking-over-max": good(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 2048}),
    "tool-choice-unknown-tool": good(tools=[{"name": "t"}], tool_choice={"type": "tool", "name": "u"}),
    "output-config-bad": good(output_config={"format": {"type": "json_schema"}}),
    "not-a-dict": ["custom_id", "params"],
    "string": "x",
}


def all_cases() -> dict[str, Any]:
    return {**CASES, **MORE_CASES}


def corpus_requests() -> list[Any]:
    found = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        try:
            found += [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
    return found


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(all_cases()))
def test_fast_path_never_passes_what_the_validator_refuses(name: str, version: str) -> None:
    request = all_cases()[name]
    problems = validate_request(request, api_version=version)
    if type(request) is dict and _plainly_valid(request, version):
        assert problems == [], f"the fast path passed what the validator refuses: {problems}"
    # The checker's answer is the full validator's, whichever path it took.
    checker = BatchChecker(api_version=version)
    assert [p.message for p in checker.check(request)] == problems


@pytest.mark.parametrize("version", VERSIONS)
def test_fast_path_agrees_on_the_bad_input_corpus(version: str) -> None:
    requests = corpus_requests()
    assert requests
    for request in requests:
        if type(request) is dict and _plainly_valid(request, version):
            assert validate_request(request, api_version=version) == [], request


def test_plain_valid_requests_take_the_fast_path() -> None:
    for name in ("valid", "valid-extra-params-field", "valid-tools", "valid-system-blocks", "valid-image-block"):
        assert _plainly_valid(CASES[name], VERSIONS[0]), name
    assert _plainly_valid(MORE_CASES["assistant-second"], VERSIONS[0])


def test_duplicates_and_the_count_limit_are_still_reported() -> None:
    checker = BatchChecker(api_version=VERSIONS[0], max_requests=2)
    assert checker.check(good("a"), line=1) == []
    duplicate = checker.check(good("a"), line=2)
    assert [p.message for p in duplicate] == [
        "custom_id is used more than once in the batch (first at line 1); custom_ids must be unique"
    ]
    over = checker.check(good("c"), line=3)
    assert [p.message for p in over] == [
        "the batch has more than 2 requests, the most one batch may hold; split it into several batches"
    ]
    assert checker.check(good("d"), line=4) == []
    assert len(checker.finish()) == 2

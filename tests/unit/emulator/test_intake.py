"""The emulator's fast create decoding must agree with the shared validator, rule for rule.

The fast path (typed msgspec structs) may hand a body to the generic path, but must never
accept one the validator refuses, and for valid bodies must build the same structs the
generic path converts its dicts to (everything after that is shared). This
runs the bad-input corpus and a table of subtle cases through both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from airflow_provider_anthropix.api.validation import validate_batch
from airflow_provider_anthropix.emulator.app import EmulatorApp
from airflow_provider_anthropix.emulator.intake import fast_requests, params_of, plain_prompt, summarize
from airflow_provider_anthropix.emulator.outcomes import Dice, make_entry
from airflow_provider_anthropix.emulator.structured import plan_answer
from tests.support.paths import DATA

CORPUS = DATA / "bad_inputs" / "requests"
VERSIONS = ("2026-10-21", "2023-06-01")


def good(custom_id: str = "ok", **params: Any) -> dict[str, Any]:
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}], **params}
    return {"custom_id": custom_id, "params": body}


def with_messages(*messages: Any, **params: Any) -> dict[str, Any]:
    return good(messages=list(messages), **params)


CASES: dict[str, dict[str, Any]] = {
    "valid": good(),
    "valid-extra-params-field": good(service_tier="auto", container="x"),
    "valid-image-block": with_messages(
        {
            "role": "user",
            "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}],
        }
    ),
    "image-media-type-missing": with_messages(
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "AA"}}]}
    ),
    "valid-system-blocks": good(system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]),
    "valid-huge-max-tokens": good(max_tokens=10**30),
    "valid-tools": good(tools=[{"name": "t"}], tool_choice={"type": "auto"}, metadata={"user_id": "u"}),
    "valid-text-null": with_messages({"role": "user", "content": [{"type": "text", "text": None}]}),
    "valid-document-in-user": with_messages(
        {"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}
    ),
    "document-source-empty": with_messages({"role": "user", "content": [{"type": "document", "source": {}}]}),
    "valid-empty-citations": with_messages(
        {"role": "user", "content": [{"type": "text", "text": "a", "citations": []}]}
    ),
    "model-empty": good(model=""),
    "model-number": good(model=3),
    "max-tokens-float": good(max_tokens=1.0),
    "max-tokens-bool": good(max_tokens=True),
    "max-tokens-zero": good(max_tokens=0),
    "max-tokens-negative-huge": good(max_tokens=-(10**30)),
    "stream-false": good(stream=False),
    "stream-null": good(stream=None),
    "system-null": good(system=None),
    "system-number": good(system=5),
    "system-block-without-type": good(system=[{"text": "x"}]),
    "metadata-null": good(metadata=None),
    "metadata-list": good(metadata=[]),
    "tools-object": good(tools={}),
    "tools-of-strings": good(tools=["x"]),
    "stop-sequences-number": good(stop_sequences=[1]),
    "thinking-string": good(thinking="on"),
    "temperature": good(temperature=0.5),
    "temperature-high": good(temperature=1.5),
    "temperature-bool": good(temperature=True),
    "top-p-string": good(top_p="0.1"),
    "top-k-negative": good(top_k=-1),
    "top-k-float": good(top_k=1.5),
    "top-k-bool": good(top_k=True),
    "top-k-ok": good(top_k=3),
    "role-missing": with_messages({"content": "hi"}),
    "role-system": with_messages({"role": "system", "content": "hi"}),
    "assistant-first": with_messages({"role": "assistant", "content": "hi"}),
    "content-null": with_messages({"role": "user", "content": None}),
    "content-number": with_messages({"role": "user", "content": 3}),
    "block-not-object": with_messages({"role": "user", "content": ["x"]}),
    "block-type-number": with_messages({"role": "user", "content": [{"type": 1}]}),
    "message-not-object": with_messages("hi"),
    "messages-empty": good(messages=[]),
    "messages-object": good(messages={}),
    "document-in-assistant": with_messages(
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]},
    ),
    "citations-in-user": with_messages(
        {"role": "user", "content": [{"type": "text", "text": "a", "citations": [{"x": 1}]}]}
    ),
    "custom-id-long": good("x" * 65),
    "custom-id-space": good("a b"),
    "custom-id-number": {"custom_id": 5, "params": good()["params"]},
    "extra-entry-field": {**good(), "note": 1},
    "params-missing": {"custom_id": "a"},
    "params-list": {"custom_id": "a", "params": []},
}


def check_parity(requests: list[Any], version: str) -> None:
    body = msgspec.json.encode({"requests": requests})
    problems = validate_batch(requests, api_version=version)
    fast = fast_requests(body, api_version=version, max_requests=100_000)
    if problems:
        assert fast is None, f"the fast path accepted what the validator refuses: {problems[0]}"
        return
    assert fast is not None, "a valid body should take the fast path"
    for request, typed in zip(requests, fast, strict=True):
        # The generic path converts validated dicts to the same structs: one code from there on.
        assert typed.custom_id == request["custom_id"]
        assert typed.params == params_of(request["params"])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_path_agrees_with_the_validator(name: str, version: str) -> None:
    check_parity([good("first"), CASES[name]], version)


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*.jsonl"))


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
@pytest.mark.parametrize("version", VERSIONS)
def test_fast_path_agrees_on_the_bad_input_corpus(path: Path, version: str) -> None:
    try:
        requests = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError):
        pytest.skip("not JSON lines: the file reader refuses it before any request exists")
    if not requests:
        pytest.skip("no requests")
    check_parity(requests, version)


def test_duplicates_counts_and_shapes_go_to_the_slow_path() -> None:
    assert (
        fast_requests(
            msgspec.json.encode({"requests": [good("a"), good("a")]}), api_version=VERSIONS[0], max_requests=9
        )
        is None
    )
    assert (
        fast_requests(
            msgspec.json.encode({"requests": [good("a"), good("b")]}), api_version=VERSIONS[0], max_requests=1
        )
        is None
    )
    assert fast_requests(msgspec.json.encode({"requests": []}), api_version=VERSIONS[0], max_requests=9) is None
    assert fast_requests(b'{"requests": [], "x": 1}', api_version=VERSIONS[0], max_requests=9) is None
    assert fast_requests(b"[" * 100_000, api_version=VERSIONS[0], max_requests=9) is None
    assert fast_requests(b'{"requests":[{"custom_id":"\xff"}]}', api_version=VERSIONS[0], max_requests=9) is None
    newline_id = {
        "custom_id": "a\n",
        "params": {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
    }
    assert (
        fast_requests(msgspec.json.encode({"requests": [newline_id]}), api_version=VERSIONS[0], max_requests=9) is None
    )


# -- the shortcut for plain requests -----------------------------------------------------------
PLAIN_OR_NEARLY = {
    "plain": good(),
    "plain-long": good(messages=[{"role": "user", "content": "word " * 400}]),
    "plain-spaced": good(messages=[{"role": "user", "content": "  two   spaces\tand a tab " * 5}]),
    "plain-empty": good(messages=[{"role": "user", "content": ""}]),
    "plain-non-ascii": good(messages=[{"role": "user", "content": "caf\u00e9 \u2603 \U0001f600" * 30}]),
    "marker": good(messages=[{"role": "user", "content": "x [[emulator:errored-once]]"}]),
    "system": good(system="be brief"),
    "two-turns": good(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
    "blocks": good(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}]}]),
    "schema": good(output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}}),
}


@pytest.mark.parametrize("name", sorted(PLAIN_OR_NEARLY))
def test_the_plain_shortcut_builds_what_the_general_path_builds(name: str) -> None:
    """Most requests of a big create skip summarize/make_entry; their entries must not differ."""
    request = PLAIN_OR_NEARLY[name]
    params = params_of(request["params"])
    assert (plain_prompt(params) is not None) == name.startswith("plain")
    joined, prompt, usage = summarize(params)
    expected = make_entry(
        "ok",
        params.model,
        params.max_tokens,
        joined,
        prompt,
        attempt=1,
        dice=Dice(),
        input_tokens=usage.total,
        structured=plan_answer(params.output_config, params.thinking, joined, seed=0, custom_id="ok", attempt=1),
    )
    assert EmulatorApp()._build([("ok", params)], Dice()) == [expected]

"""Token counting, the model list and prompt-cache accounting, through the official SDK unchanged.

``count_tokens`` and a result's ``usage`` come from one function in the emulator, so the
count a client gets before sending equals the usage it is billed for afterwards
(``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.emulator.models import MODELS

MODEL = "claude-haiku-4-5"
#: ~2,500 tokens at the emulator's 4 characters a token: long enough to be cached, even for Haiku (2,048)
LONG_SYSTEM = "You are a careful assistant who answers about rivers of the world. " * 150
#: ~1,500 tokens: cached for most models (1,024), not for the smallest (2,048)
MEDIUM_SYSTEM = "You are a careful assistant who answers about rivers of the world. " * 90


@pytest.fixture
def sdk(emulator: EmulatorHandle, emulator_api_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.url, api_key=emulator_api_key, max_retries=0) as client:
        yield client


def cached_system(text: str = LONG_SYSTEM) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]


def run_batch(sdk: anthropic.Anthropic, emulator: EmulatorHandle, params: list[dict[str, Any]]) -> dict[str, Any]:
    batch = sdk.messages.batches.create(
        requests=[{"custom_id": f"p{i}", "params": {"max_tokens": 64, **p}} for i, p in enumerate(params)]  # type: ignore[misc]
    )
    emulator.advance(1)
    return {r.custom_id: r.result for r in sdk.messages.batches.results(batch.id)}


PARAMS: dict[str, dict[str, Any]] = {
    "plain": {"model": MODEL, "messages": [{"role": "user", "content": "Name three rivers"}]},
    "system-string": {
        "model": MODEL,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Name three rivers"}],
    },
    "system-blocks": {
        "model": MODEL,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "How long is the Nile?"}]}],
    },
    "tools": {
        "model": MODEL,
        "tools": [{"name": "lookup", "description": "Find a river", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Find the Danube"}],
    },
    "multi-turn": {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "Name a river"},
            {"role": "assistant", "content": "The Rhine."},
            {"role": "user", "content": "How long is it?"},
        ],
    },
    "cached-prefix": {
        "model": MODEL,
        "system": cached_system(),
        "messages": [{"role": "user", "content": "Name three rivers"}],
    },
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_count_tokens_equals_the_usage_of_the_result(
    sdk: anthropic.Anthropic, emulator: EmulatorHandle, name: str
) -> None:
    params = PARAMS[name]
    counted = sdk.messages.count_tokens(**params).input_tokens
    assert counted > 0
    result = run_batch(sdk, emulator, [params])["p0"]
    assert result.type == "succeeded"
    usage = result.message.usage
    billed = usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    assert billed == counted


def test_count_tokens_grows_with_the_prompt_and_counts_system_and_tools(sdk: anthropic.Anthropic) -> None:
    plain = sdk.messages.count_tokens(**PARAMS["plain"]).input_tokens
    with_system = sdk.messages.count_tokens(system="Be brief. " * 50, **PARAMS["plain"]).input_tokens
    tools = [{"name": "lookup", "description": "Find a river " * 20, "input_schema": {"type": "object"}}]
    with_tools = sdk.messages.count_tokens(tools=tools, **PARAMS["plain"]).input_tokens  # type: ignore[arg-type]
    assert with_system > plain and with_tools > plain
    assert sdk.messages.count_tokens(**PARAMS["plain"]).input_tokens == plain, "deterministic"


def test_count_tokens_refuses_what_the_api_refuses(sdk: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    headers = {"x-api-key": sdk.api_key or "", "anthropic-version": "2026-10-21"}
    url = emulator.url + "/v1/messages/count_tokens"
    with_max_tokens = httpx.post(url, headers=headers, json={**PARAMS["plain"], "max_tokens": 10})
    assert with_max_tokens.status_code == 400 and "max_tokens: Extra inputs" in with_max_tokens.text
    with pytest.raises(anthropic.BadRequestError, match=r"messages\[0\]\.role"):
        sdk.messages.count_tokens(model=MODEL, messages=[{"role": "robot", "content": "hi"}])  # type: ignore[list-item]
    no_model = httpx.post(url, headers=headers, json={"messages": [{"role": "user", "content": "hi"}]})
    assert no_model.status_code == 400 and "model is missing" in no_model.json()["error"]["message"]
    assert httpx.post(url, headers=headers, content=b"[" * 100_000).status_code == 400
    assert emulator.stats()["calls"]["count_tokens"] >= 3


def test_models_list_pages_like_the_batch_list(sdk: anthropic.Anthropic) -> None:
    first = sdk.models.list(limit=3)
    assert [m.id for m in first.data] == [m.id for m in MODELS[:3]] and first.has_more
    assert first.data[0].type == "model" and first.data[0].display_name
    walked = [m.id for m in sdk.models.list(limit=3)]
    assert walked == [m.id for m in MODELS], "auto-paging walks every page, newest first"
    ids = {m.id for m in sdk.models.list(limit=100)}
    for family in ("claude-haiku-4-5-", "claude-sonnet-4-5-", "claude-opus-4-1-"):
        assert any(i.startswith(family) for i in ids), family
    newer = sdk.models.list(before_id=MODELS[4].id, limit=2)
    assert [m.id for m in newer.data] == [MODELS[2].id, MODELS[3].id]


def test_models_retrieve_resolves_aliases(sdk: anthropic.Anthropic) -> None:
    assert sdk.models.retrieve("claude-sonnet-4-5").id == "claude-sonnet-4-5-20250929"
    assert sdk.models.retrieve("claude-haiku-4-5-20251001").id == "claude-haiku-4-5-20251001"
    with pytest.raises(anthropic.NotFoundError):
        sdk.models.retrieve("claude-haiku-4-6")
    with pytest.raises(anthropic.BadRequestError):
        sdk.models.list(after_id="claude-sonnet-4-5")  # a cursor is a listed id, not an alias


def test_cache_is_written_once_then_read_in_a_batch(sdk: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    shared = {"model": MODEL, "system": cached_system()}
    params = [{**shared, "messages": [{"role": "user", "content": f"Question {i}"}]} for i in range(4)]
    other = {
        "model": MODEL,
        "system": cached_system(LONG_SYSTEM + " Answer in French."),
        "messages": params[0]["messages"],
    }
    short = {"model": MODEL, "system": cached_system("Too short to cache."), "messages": params[0]["messages"]}
    results = run_batch(sdk, emulator, [*params, other, short])
    usages = [results[f"p{i}"].message.usage for i in range(6)]
    prefix = usages[0].cache_creation_input_tokens
    assert prefix is not None and prefix >= 1024
    assert usages[0].cache_read_input_tokens == 0
    for usage in usages[1:4]:
        assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, prefix)
        assert usage.input_tokens == usages[0].input_tokens, "only the prefix is cached; the rest is input"
    assert usages[4].cache_creation_input_tokens > 0, "another prefix writes its own entry"
    assert (usages[5].cache_creation_input_tokens, usages[5].cache_read_input_tokens) == (0, 0), "under 1,024 tokens"
    # Another batch starts with a cold cache.
    again = run_batch(sdk, emulator, params[:1])["p0"].message.usage
    assert again.cache_creation_input_tokens == prefix


def test_the_smallest_models_need_a_longer_prefix(sdk: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    def usage_of(model: str) -> Any:
        params = {
            "model": model,
            "system": cached_system(MEDIUM_SYSTEM),
            "messages": [{"role": "user", "content": "Q"}],
        }
        return run_batch(sdk, emulator, [params])["p0"].message.usage

    assert usage_of("claude-sonnet-4-5").cache_creation_input_tokens > 0
    assert usage_of("claude-haiku-4-5").cache_creation_input_tokens == 0


def test_cache_breakpoint_in_a_message_block(sdk: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    document = {"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}
    params = [
        {"model": MODEL, "messages": [{"role": "user", "content": [document, {"type": "text", "text": f"Q{i}"}]}]}
        for i in range(2)
    ]
    results = run_batch(sdk, emulator, params)
    first, second = results["p0"].message.usage, results["p1"].message.usage
    assert first.cache_creation_input_tokens and second.cache_read_input_tokens == first.cache_creation_input_tokens


def test_unknown_models_can_end_as_errored_results(emulator_factory: Callable[..., EmulatorHandle]) -> None:
    emu = emulator_factory(api_key="k", unknown_models="errored", processing_seconds=0.1)
    with anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0) as sdk:
        known = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}
        typo = {**known, "model": "claude-haiku-4-6"}
        results = run_batch(sdk, emu, [known, typo])
        assert results["p0"].type == "succeeded"
        errored = results["p1"]
        assert errored.type == "errored" and errored.error.error.type == "invalid_request_error"
        assert "claude-haiku-4-6" in errored.error.error.message
        with pytest.raises(anthropic.NotFoundError):
            sdk.messages.count_tokens(**typo)


def test_unknown_models_are_accepted_by_default(sdk: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    result = run_batch(sdk, emulator, [{"model": "claude-test-1", "messages": [{"role": "user", "content": "hi"}]}])
    assert result["p0"].type == "succeeded"

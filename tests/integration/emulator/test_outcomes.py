"""Retry rounds against the emulator: outcomes depend on the seed, the custom_id and the attempt.

The attempt of a request is how many batches of this emulator have carried its custom_id
(1 for the first), so a request that errored transiently can succeed when resubmitted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle

BATCHES = "/v1/messages/batches"


def request(custom_id: str, text: str = "Name a river") -> dict[str, Any]:
    params = {"model": "claude-test-1", "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "params": params}


def outcomes(emulator: EmulatorHandle, http: httpx.Client, requests: list[dict[str, Any]]) -> dict[str, str]:
    """Create a batch, end it, return custom_id -> result type (plus :error type for errored)."""
    response = http.post(BATCHES, json={"requests": requests})
    assert response.status_code == 200, response.text
    emulator.advance(1)
    found: dict[str, str] = {}
    for line in http.get(f"{BATCHES}/{response.json()['id']}/results").content.splitlines():
        item = json.loads(line)
        result = item["result"]
        kind = result["type"]
        if kind == "errored":
            kind += ":" + result["error"]["error"]["type"]
        found[item["custom_id"]] = kind
    return found


def test_errored_once_succeeds_on_the_second_attempt(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch = [
        request("once", "[[emulator:errored-once:overloaded_error]]"),
        request("once-default", "[[emulator:errored-once]]"),
        request("always", "[[emulator:errored:overloaded_error]]"),
        request("expired-once", "[[emulator:expired-once]]"),
        request("plain"),
    ]
    first = outcomes(emulator, emulator_http, batch)
    assert first == {
        "once": "errored:overloaded_error",
        "once-default": "errored:api_error",
        "always": "errored:overloaded_error",
        "expired-once": "expired",
        "plain": "succeeded",
    }
    assert emulator.attempts("once") == 1
    second = outcomes(emulator, emulator_http, batch)
    assert second == {
        "once": "succeeded",
        "once-default": "succeeded",
        "always": "errored:overloaded_error",
        "expired-once": "succeeded",
        "plain": "succeeded",
    }
    assert emulator.attempts("once") == 2


def test_errored_times_n(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch = [
        request("thrice", "[[emulator:errored-times:3:api_error]]"),
        request("exp2", "[[emulator:expired-times:2]]"),
    ]
    rounds = [outcomes(emulator, emulator_http, batch) for _ in range(4)]
    assert [r["thrice"] for r in rounds] == ["errored:api_error"] * 3 + ["succeeded"]
    assert [r["exp2"] for r in rounds] == ["expired", "expired", "succeeded", "succeeded"]


def test_a_refused_create_does_not_count_an_attempt(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    bad = {**request("once", "[[emulator:errored-once]]"), "extra": 1}
    assert emulator_http.post(BATCHES, json={"requests": [bad]}).status_code == 400
    assert emulator.attempts("once") == 0
    assert (
        outcomes(emulator, emulator_http, [request("once", "[[emulator:errored-once]]")])["once"] == "errored:api_error"
    )


def test_rates_apply_to_first_attempts_only(emulator_factory: Callable[..., EmulatorHandle]) -> None:
    emu = emulator_factory(seed=7, error_rate=0.3, expire_rate=0.2, processing_seconds=0.1)
    headers = {"x-api-key": "k", "anthropic-version": "2026-10-21"}
    with httpx.Client(base_url=emu.url, headers=headers) as http:
        batch = [request(f"r{i}") for i in range(300)]
        first = outcomes(emu, http, batch)
        errored = {k for k, v in first.items() if v == "errored:api_error"}
        expired = {k for k, v in first.items() if v == "expired"}
        assert 50 < len(errored) < 130 and 20 < len(expired) < 100, (len(errored), len(expired))
        retry = [r for r in batch if r["custom_id"] in errored | expired]
        second = outcomes(emu, http, retry)
        assert set(second.values()) == {"succeeded"}, "a retry round fixes every transient failure"
        # Deterministic: a fresh emulator with the same seed draws the same first attempts.
    again = emulator_factory(seed=7, error_rate=0.3, expire_rate=0.2, processing_seconds=0.1)
    with httpx.Client(base_url=again.url, headers=headers) as http:
        assert outcomes(again, http, batch) == first


def test_rates_every_attempt_can_fail_a_retry_again(emulator_factory: Callable[..., EmulatorHandle]) -> None:
    emu = emulator_factory(seed=3, error_rate=0.5, rates_every_attempt=True, processing_seconds=0.1)
    headers = {"x-api-key": "k", "anthropic-version": "2026-10-21"}
    with httpx.Client(base_url=emu.url, headers=headers) as http:
        batch = [request(f"r{i}") for i in range(200)]
        first = outcomes(emu, http, batch)
        retry = [r for r in batch if first[r["custom_id"]] != "succeeded"]
        second = outcomes(emu, http, retry)
        assert "errored:api_error" in second.values(), "with the flag, attempt 2 rolls its own dice"
        assert "succeeded" in second.values()


@pytest.mark.parametrize("how", ["handle", "http", "full-reset"])
def test_attempt_counters_reset(emulator: EmulatorHandle, emulator_http: httpx.Client, how: str) -> None:
    batch = [request("once", "[[emulator:errored-once]]")]
    assert outcomes(emulator, emulator_http, batch)["once"] == "errored:api_error"
    assert emulator_http.get("/_emulator/attempts", params={"custom_id": "once"}).json()["attempts"] == 1
    if how == "handle":
        emulator.reset_attempts()
    elif how == "http":
        assert emulator_http.delete("/_emulator/attempts").status_code == 200
    else:
        emulator.reset()
    assert emulator.attempts("once") == 0
    assert outcomes(emulator, emulator_http, batch)["once"] == "errored:api_error", "attempt 1 again"

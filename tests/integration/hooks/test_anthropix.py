"""AnthropixHook with a real Airflow connection (from the environment) against the emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from airflow_provider_anthropix.api import AsyncClient
from airflow_provider_anthropix.emulator import EmulatorHandle, run_emulator
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError

KEY = "sk-ant-hook-test-secret-0123456789"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with run_emulator(api_key=KEY, processing_seconds=0.2) as handle:
        yield handle


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "anthropix", **fields}))


@pytest.mark.smoke
def test_hook_round_trip_and_test_connection(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorHandle) -> None:
    set_connection(monkeypatch, "anthropix_default", password=KEY, host=emulator.url)
    hook = AnthropixHook()
    ok, message = hook.test_connection()
    assert ok, message
    assert emulator.url in message

    batch = hook.create_batch(
        [{"custom_id": "a", "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}}]
    )
    assert hook.get_batch(batch.id).id == batch.id
    assert next(b.id for b in hook.iter_batches()) == batch.id
    assert KEY not in repr(hook)
    assert KEY not in repr(hook.config)
    assert KEY not in repr(hook.client)


@pytest.mark.smoke
def test_test_connection_says_the_key_is_wrong(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorHandle) -> None:
    set_connection(monkeypatch, "bad_key", password="sk-not-the-key", host=emulator.url)
    ok, message = AnthropixHook("bad_key").test_connection()
    assert not ok
    assert "API key was rejected" in message
    assert "sk-not-the-key" not in message


def test_test_connection_says_the_host_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "nowhere", password=KEY, host="http://127.0.0.1:9", extra={"max_retries": 0})
    ok, message = AnthropixHook("nowhere").test_connection()
    assert not ok
    assert "could not connect to http://127.0.0.1:9 (connection 'nowhere'): connection refused" in message
    assert "check the port in the host field" in message


def test_test_connection_names_the_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "no_key", host="http://127.0.0.1:9")
    ok, message = AnthropixHook("no_key").test_connection()
    assert not ok
    assert "connection 'no_key': password (API Key)" in message
    with pytest.raises(ConnectionSettingsError):
        AnthropixHook("no_key").get_batch("msgbatch_x")


def test_async_client_is_shared_per_loop(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorHandle) -> None:
    set_connection(monkeypatch, "anthropix_default", password=KEY, host=emulator.url)

    async def scenario() -> tuple[AsyncClient, AsyncClient, int]:
        first = await AnthropixHook.aget_async_client()
        second = await AnthropixHook.aget_async_client("anthropix_default")
        page = await first.list_batches(limit=1)
        await first.aclose()
        return first, second, len(page.data)

    first, second, _ = asyncio.run(scenario())
    assert first is second

"""Batches made on the emulator, for the tests that fetch and export their results."""

from __future__ import annotations

import time
from typing import Any

import requests

from airflow_provider_anthropix.api import MessageBatch
from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook


def batch_requests(n: int, *, model: str = "claude-sonnet-4-5-20250929") -> list[dict[str, Any]]:
    """``n`` requests; markers force a mix of outcomes (every 7th errored, 11th canceled, 13th expired)."""
    requests_: list[dict[str, Any]] = []
    for i in range(n):
        marker = ""
        if i % 13 == 12:
            marker = " [[emulator:expired]]"
        elif i % 11 == 10:
            marker = " [[emulator:canceled]]"
        elif i % 7 == 6:
            marker = " [[emulator:errored:invalid_request_error]]"
        requests_.append(
            {
                "custom_id": f"q-{i:06d}",
                "params": {
                    "model": model,
                    "max_tokens": 1024,
                    "messages": [{"role": "user", "content": f"Question number {i}?{marker}"}],
                },
            }
        )
    return requests_


def ended_batch(hook: AnthropixHook, emulator: EmulatorHandle, n: int) -> MessageBatch:
    """Create a batch of ``n`` requests on the emulator and return it once it has ended."""
    batch = hook.create_batch(batch_requests(n))
    emulator.advance(3600)
    deadline = time.monotonic() + 30
    while not batch.is_ended:
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch.id} did not end")
        time.sleep(0.05)
        batch = hook.get_batch(batch.id)
    return batch


def served_bytes(emulator: EmulatorHandle, api_key: str, batch_id: str) -> bytes:
    """The results stream exactly as the emulator serves it, fetched with plain requests."""
    response = requests.get(
        f"{emulator.url}/v1/messages/batches/{batch_id}/results",
        headers={"x-api-key": api_key, "anthropic-version": "2026-10-21"},
        timeout=30,
    )
    response.raise_for_status()
    return response.content

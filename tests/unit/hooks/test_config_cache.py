"""The per-loop connection cache: one read for many waiters, failures not kept, cancellation contained."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.hooks.config_cache import AsyncConfigCache

CONFIG = ClientConfig(api_key="sk-test", base_url="http://127.0.0.1:1")


async def test_concurrent_callers_share_one_read() -> None:
    reads = 0

    async def read(_conn_id: str) -> ClientConfig:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return CONFIG

    cache = AsyncConfigCache()
    results = await asyncio.gather(*(cache.get("c", read) for _ in range(50)))
    assert all(result is CONFIG for result in results)
    assert reads == 1


async def test_a_failed_read_is_not_cached() -> None:
    calls = 0

    async def read(_conn_id: str) -> ClientConfig:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("secrets backend down")
        return CONFIG

    cache = AsyncConfigCache()
    with pytest.raises(RuntimeError, match="secrets backend down"):
        await cache.get("c", read)
    assert await cache.get("c", read) is CONFIG
    assert calls == 2


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    release = asyncio.Event()

    async def read(_conn_id: str) -> ClientConfig:
        await release.wait()
        return CONFIG

    cache = AsyncConfigCache()
    first = asyncio.ensure_future(cache.get("c", read))
    second = asyncio.ensure_future(cache.get("c", read))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    release.set()
    assert await second is CONFIG
    assert first.cancelled()

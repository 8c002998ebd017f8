"""Connection settings shared by the coroutines of one event loop, re-read once a minute.

When a triggerer (re)starts, thousands of triggers of the same connection start at once.
Each reading the connection would mean thousands of Execution API calls and secret-masker
updates on the loop (seconds of blocked loop, measured). Concurrent readers of one
connection wait for a single read instead; a failed read is not cached, so the next
caller tries again.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable

from airflow_provider_anthropix.api.config import ClientConfig

#: How long the coroutines of one loop reuse a connection's settings before reading it again (seconds).
CONFIG_TTL = 60.0

Reader = Callable[[str], Awaitable[ClientConfig]]


class AsyncConfigCache:
    """Per event loop: connection id -> (read time, future settings)."""

    def __init__(self, ttl: float = CONFIG_TTL) -> None:
        self.ttl = ttl
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Future[ClientConfig]]]
        ] = weakref.WeakKeyDictionary()

    async def get(self, conn_id: str, read: Reader) -> ClientConfig:
        loop = asyncio.get_running_loop()
        entries = self._loops.setdefault(loop, {})
        entry = entries.get(conn_id)
        now = time.monotonic()
        if entry is not None and now - entry[0] <= self.ttl and not entry[1].cancelled():
            return await asyncio.shield(entry[1])
        future: asyncio.Future[ClientConfig] = loop.create_future()
        entries[conn_id] = (now, future)
        try:
            config = await read(conn_id)
        except asyncio.CancelledError:
            entries.pop(conn_id, None)
            future.cancel()
            raise
        except Exception as exc:
            entries.pop(conn_id, None)
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs a warning
            raise
        future.set_result(config)
        return config

    def clear(self) -> None:
        self._loops.clear()

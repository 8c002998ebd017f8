"""Connection settings shared by the coroutines of one event loop, re-read once a minute.

When a triggerer (re)starts, thousands of triggers of the same connection start at once.
Each reading the connection would mean thousands of Execution API calls and secret-masker
updates on the loop (seconds of blocked loop, measured). Concurrent readers of one
connection wait for a single read instead; a failed read is not cached, so the next
caller tries again; a waiter that is cancelled does not cancel the read for the others.
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
        if entry is None or now - entry[0] > self.ttl:
            # The read runs as a task of its own: a caller that is cancelled while waiting (its
            # trigger was cleared) must not cancel the read the other waiters share.
            task: asyncio.Future[ClientConfig] = asyncio.ensure_future(read(conn_id), loop=loop)
            task.add_done_callback(lambda done: self._forget_failure(entries, conn_id, done))
            entry = entries[conn_id] = (now, task)
        return await asyncio.shield(entry[1])

    @staticmethod
    def _forget_failure(
        entries: dict[str, tuple[float, asyncio.Future[ClientConfig]]], conn_id: str, done: asyncio.Future[ClientConfig]
    ) -> None:
        """A failed read is not cached: the next caller reads again."""
        if done.cancelled() or done.exception() is not None:
            current = entries.get(conn_id)
            if current is not None and current[1] is done:
                del entries[conn_id]

    def clear(self) -> None:
        self._loops.clear()

"""BatchEndedTrigger: waits in the triggerer until a batch has ended, without blocking the loop.

A triggerer runs thousands of triggers on one event loop. This one awaits the shared
``httpx`` client of its connection (one pool per connection and loop, with its own
admission gate, see :func:`airflow_provider_anthropix.api.shared_async_client`; the
connection itself is read once a minute per loop, see ``hooks/config_cache.py``): no thread
per poll, no client per trigger, no blocking call. Polls are spread with jitter so triggers started together
do not stay in lockstep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_anthropix.api import (
    AnthropixAPIError,
    AnthropixError,
    MessageBatch,
)
from airflow_provider_anthropix.api.retry import is_transient
from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID

#: Longest wait between polls after failures (seconds).
MAX_BACKOFF = 600.0


def jittered(interval: float, jitter: float, rng: random.Random | None = None) -> float:
    """``interval`` moved by up to ``jitter`` (a fraction) either way, never below 0."""
    spread = interval * max(0.0, min(jitter, 1.0))
    draw = (rng or random).uniform(-spread, spread)
    return max(0.0, interval + draw)


def deadline_epoch(deadline: str | None) -> float | None:
    """A trigger's ISO 8601 deadline as a Unix time, or None for no deadline."""
    if not deadline:
        return None
    import pendulum  # only when a deadline is set: DAG files import this module

    parsed = pendulum.parse(deadline)
    if not isinstance(parsed, pendulum.DateTime):
        raise ValueError(f"deadline must be an ISO 8601 date-time, got {deadline!r}")
    return float(parsed.timestamp())


def next_poll_wait(poll_interval: float, jitter: float, failures: int, retry_hint: float | None) -> float:
    """Seconds until the next poll: the interval when all is well; the server's hint or a backoff after failures."""
    if failures == 0:
        return jittered(poll_interval, jitter)
    if retry_hint is not None and retry_hint >= 0:
        return min(retry_hint, MAX_BACKOFF)  # a proxy's "retry-after: 86400" must not outlast the deadline
    backoff = min(MAX_BACKOFF, poll_interval * 2.0 ** (failures - 1))
    return jittered(backoff, max(jitter, 0.25))


async def sleep_before_first_poll(first_poll_delay: float, jitter: float, deadline: float | None) -> None:
    """Wait ``first_poll_delay`` (jittered), never past the deadline."""
    if first_poll_delay <= 0:
        return
    wait = jittered(first_poll_delay, jitter)
    if deadline is not None:
        wait = min(wait, max(0.0, deadline - time.time()))
    await asyncio.sleep(wait)


def describe_progress(batch: MessageBatch, rate: float | None) -> str:
    """``batch msgbatch_x 41,200/100,000 done (41%), 312 errored, eta ~14 min`` (eta when known)."""
    counts = batch.request_counts
    total = counts.total
    done = counts.done
    percent = (100.0 * done / total) if total else 0.0
    text = f"batch {batch.id} {batch.processing_status}: {done:,}/{total:,} done ({percent:.0f}%)"
    if counts.errored:
        text += f", {counts.errored:,} errored"
    if rate and rate > 0 and counts.processing:
        eta = counts.processing / rate
        text += f", eta ~{_duration(eta)}"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class BatchEndedTrigger(BaseTrigger):
    """Poll a batch until ``processing_status`` is ``ended`` or the deadline passes; yield one event.

    The event is ``{"status": "success" | "error" | "timeout", "batch": <batch dict>, "message": str}``.
    ``success`` only says the batch has ended: how its requests fared is the caller's outcome policy.
    ``batch`` is the last batch object seen (``{"id": ...}`` when none was).

    :param batch_id: the batch to wait for.
    :param anthropix_conn_id: the Airflow connection (read asynchronously; its key never leaves it).
    :param poll_interval: seconds between polls, jittered by ``jitter``.
    :param deadline: ISO 8601 time after which a ``timeout`` event is sent; None waits until the end.
    :param jitter: fraction of ``poll_interval`` each wait may move either way (0.1 = +/-10%).
    :param max_poll_failures: consecutive transient failures (5xx, 529, 429, network) tolerated before an
        ``error`` event; waits back off exponentially in between and follow ``retry-after``.
    :param progress_log_interval: seconds between progress log lines (status changes are always logged).
    :param first_poll_delay: seconds (jittered) to wait before the first poll. The sensor and the
        cancel operator have just looked at the batch before deferring, so polling again at once
        gains nothing; it also keeps the trigger from firing within moments of the deferral,
        a window in which Airflow's scheduler can still be processing the deferring try.
    """

    def __init__(
        self,
        batch_id: str,
        anthropix_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        deadline: str | None = None,
        jitter: float = 0.1,
        max_poll_failures: int = 10,
        progress_log_interval: float = 300.0,
        first_poll_delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.batch_id = batch_id
        self.anthropix_conn_id = anthropix_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.jitter = float(jitter)
        self.max_poll_failures = int(max_poll_failures)
        self.progress_log_interval = float(progress_log_interval)
        self.first_poll_delay = float(first_poll_delay)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_id": self.batch_id,
                "anthropix_conn_id": self.anthropix_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "jitter": self.jitter,
                "max_poll_failures": self.max_poll_failures,
                "progress_log_interval": self.progress_log_interval,
                "first_poll_delay": self.first_poll_delay,
            },
        )

    def _event(self, status: str, batch: MessageBatch | None, message: str) -> TriggerEvent:
        payload = batch.to_dict() if batch is not None else {"id": self.batch_id}
        return TriggerEvent({"status": status, "batch": payload, "message": message})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_anthropix.hooks.anthropix import AnthropixHook

        try:
            deadline = deadline_epoch(self.deadline)
            client = await AnthropixHook.aget_async_client(self.anthropix_conn_id)
        except Exception as exc:  # settings errors, missing connection: retrying cannot fix them
            yield self._event("error", None, f"cannot wait for batch {self.batch_id}: {exc}")
            return

        await sleep_before_first_poll(self.first_poll_delay, self.jitter, deadline)

        last: MessageBatch | None = None
        failures = 0
        first_seen: tuple[float, int] | None = None  # (time, done) when first observed, for the ETA
        last_log = 0.0
        last_status = ""
        while True:
            retry_hint: float | None = None
            try:
                batch = await client.get_batch(self.batch_id)
            except AnthropixError as exc:
                if not is_transient(exc):
                    yield self._event("error", last, f"polling batch {self.batch_id} failed: {exc}")
                    return
                failures += 1
                if failures > self.max_poll_failures:
                    yield self._event(
                        "error",
                        last,
                        f"polling batch {self.batch_id} failed {failures} times in a row; last error: {exc}",
                    )
                    return
                if isinstance(exc, AnthropixAPIError):
                    retry_hint = exc.retry_after
                self.log.warning(
                    "Polling batch %s failed (%s); failure %d of %d tolerated",
                    self.batch_id,
                    exc,
                    failures,
                    self.max_poll_failures,
                )
            else:
                failures = 0
                last = batch
                now = time.monotonic()
                if first_seen is None:
                    first_seen = (now, batch.request_counts.done)
                if batch.is_ended:
                    yield self._event("success", batch, f"{describe_progress(batch, None)}; ended at {batch.ended_at}")
                    return
                if batch.processing_status != last_status or now - last_log >= self.progress_log_interval:
                    elapsed = now - first_seen[0]
                    rate = (batch.request_counts.done - first_seen[1]) / elapsed if elapsed > 0 else None
                    self.log.info("%s", describe_progress(batch, rate))
                    last_status = batch.processing_status
                    last_log = now

            wait = next_poll_wait(self.poll_interval, self.jitter, failures, retry_hint)
            if deadline is not None:
                remaining = deadline - time.time()
                if remaining <= 0:
                    yield self._event(
                        "timeout",
                        last,
                        f"batch {self.batch_id} had not ended by the deadline {self.deadline}"
                        + (f" ({describe_progress(last, None)})" if last is not None else ""),
                    )
                    return
                wait = min(wait, remaining)
            await asyncio.sleep(wait)

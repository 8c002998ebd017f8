"""BatchesEndedTrigger: one trigger waiting on all the batches of a job that are in flight.

A job with ten batches defers once per wait with one trigger, not ten: each poll interval
it asks for every batch still processing (one ``GET`` each, concurrently, on the shared
async client of the connection), so it makes no more calls than ten single-batch triggers
and holds one task and one set of counters. The wait ends when ``any`` batch has ended
(the job has room to create its next shard) or when ``all`` have (the round is over).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_anthropix.api import AnthropixAPIError, AnthropixError, MessageBatch
from airflow_provider_anthropix.api.retry import is_transient
from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID
from airflow_provider_anthropix.triggers.batch import (
    _duration,
    deadline_epoch,
    next_poll_wait,
    sleep_before_first_poll,
)

WAIT_FOR = ("any", "all")


class BatchesEndedTrigger(BaseTrigger):
    """Poll several batches until ``wait_for`` of them have ended, or the deadline passes; yield one event.

    The event is ``{"status": "success" | "error" | "timeout", "ended": {batch_id: request_counts},
    "message": str}``. ``success`` says which batches ended; the job reads their outcome itself.

    :param batch_ids: the batches to wait for.
    :param anthropix_conn_id: the Airflow connection (read asynchronously; its key never leaves it).
    :param wait_for: ``any`` (the first batch that ends ends the wait) or ``all``.
    :param poll_interval: seconds between polls, jittered by ``jitter``.
    :param deadline: ISO 8601 time after which a ``timeout`` event is sent.
    :param jitter: fraction of ``poll_interval`` each wait may move either way.
    :param max_poll_failures: consecutive polls in which every call failed transiently before an ``error`` event.
    :param progress_log_interval: seconds between progress lines.
    :param first_poll_delay: seconds to wait before the first poll (the job has just looked).
    :param job_progress: the job's totals (``requests``, ``requests_done`` by batches not polled here,
        ``batches``, ``batches_ended``, ``round``), so the progress line speaks for the whole job.
    """

    def __init__(
        self,
        batch_ids: list[str],
        anthropix_conn_id: str = DEFAULT_CONN_ID,
        wait_for: str = "all",
        poll_interval: float = 60.0,
        deadline: str | None = None,
        jitter: float = 0.1,
        max_poll_failures: int = 10,
        progress_log_interval: float = 300.0,
        first_poll_delay: float = 0.0,
        job_progress: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if wait_for not in WAIT_FOR:
            raise ValueError(f"wait_for must be one of {', '.join(WAIT_FOR)}, got {wait_for!r}")
        if not batch_ids:
            raise ValueError("batch_ids is empty: there is nothing to wait for")
        self.batch_ids = [str(b) for b in batch_ids]
        self.anthropix_conn_id = anthropix_conn_id
        self.wait_for = wait_for
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.jitter = float(jitter)
        self.max_poll_failures = int(max_poll_failures)
        self.progress_log_interval = float(progress_log_interval)
        self.first_poll_delay = float(first_poll_delay)
        self.job_progress = dict(job_progress or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": list(self.batch_ids),
                "anthropix_conn_id": self.anthropix_conn_id,
                "wait_for": self.wait_for,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "jitter": self.jitter,
                "max_poll_failures": self.max_poll_failures,
                "progress_log_interval": self.progress_log_interval,
                "first_poll_delay": self.first_poll_delay,
                "job_progress": dict(self.job_progress),
            },
        )

    def _event(self, status: str, ended: dict[str, MessageBatch], message: str) -> TriggerEvent:
        payload = {batch_id: batch.request_counts.to_dict() for batch_id, batch in ended.items()}
        return TriggerEvent({"status": status, "ended": payload, "message": message})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_anthropix.hooks.anthropix import AnthropixHook

        try:
            deadline = deadline_epoch(self.deadline)
            client = await AnthropixHook.aget_async_client(self.anthropix_conn_id)
        except Exception as exc:  # settings errors, missing connection: retrying cannot fix them
            yield self._event("error", {}, f"cannot wait for batches {', '.join(self.batch_ids)}: {exc}")
            return
        await sleep_before_first_poll(self.first_poll_delay, self.jitter, deadline)

        pending = list(self.batch_ids)
        ended: dict[str, MessageBatch] = {}
        latest: dict[str, MessageBatch] = {}
        failures = 0
        first_seen: tuple[float, int] | None = None
        last_log = 0.0
        while True:
            answers = await asyncio.gather(*(client.get_batch(b) for b in pending), return_exceptions=True)
            retry_hint: float | None = None
            failed: list[AnthropixError] = []
            for batch_id, answer in zip(pending, answers, strict=True):
                if isinstance(answer, MessageBatch):
                    latest[batch_id] = answer
                    if answer.is_ended:
                        ended[batch_id] = answer
                    continue
                if not isinstance(answer, AnthropixError):
                    raise answer  # a bug, not the API: let the triggerer report it
                if not is_transient(answer):
                    yield self._event("error", ended, f"polling batch {batch_id} failed: {answer}")
                    return
                failed.append(answer)
                if isinstance(answer, AnthropixAPIError) and answer.retry_after is not None:
                    retry_hint = max(retry_hint or 0.0, answer.retry_after)
            pending = [b for b in pending if b not in ended]
            if ended and (self.wait_for == "any" or not pending):
                yield self._event("success", ended, self._describe(latest, None) + "; " + f"{len(ended)} ended")
                return
            if failed and len(failed) == len(answers):
                failures += 1
                if failures > self.max_poll_failures:
                    yield self._event(
                        "error", ended, f"polling failed {failures} times in a row; last error: {failed[-1]}"
                    )
                    return
                self.log.warning(
                    "Polling %d batch(es) failed (%s); failure %d of %d tolerated",
                    len(failed),
                    failed[-1],
                    failures,
                    self.max_poll_failures,
                )
            else:
                failures = 0
                now = time.monotonic()
                done = self._done(latest)
                if first_seen is None:
                    first_seen = (now, done)
                if now - last_log >= self.progress_log_interval:
                    elapsed = now - first_seen[0]
                    rate = (done - first_seen[1]) / elapsed if elapsed > 0 else None
                    self.log.info("%s", self._describe(latest, rate))
                    last_log = now
            wait = next_poll_wait(self.poll_interval, self.jitter, failures, retry_hint)
            if deadline is not None:
                remaining = deadline - time.time()
                if remaining <= 0:
                    yield self._event(
                        "timeout",
                        ended,
                        f"batches had not ended by the deadline {self.deadline}: {self._describe(latest, None)}",
                    )
                    return
                wait = min(wait, remaining)
            await asyncio.sleep(wait)

    def _done(self, latest: dict[str, MessageBatch]) -> int:
        return sum(batch.request_counts.done for batch in latest.values())

    def _describe(self, latest: dict[str, MessageBatch], rate: float | None) -> str:
        """``round 0: 3/10 batches ended, 412,000/1,000,000 requests done, eta ~40 min`` for the whole job."""
        job = self.job_progress
        ended_here = sum(1 for b in latest.values() if b.is_ended)
        batches = job.get("batches", len(self.batch_ids))
        batches_ended = job.get("batches_ended", 0) + ended_here
        done_here = self._done(latest)
        total = job.get("requests") or sum(b.request_counts.total for b in latest.values())
        done = job.get("requests_done", 0) + done_here
        text = f"round {job.get('round', 0)}: {batches_ended}/{batches} batches ended, {done:,}/{total:,} requests done"
        left = sum(b.request_counts.processing for b in latest.values())
        if rate and rate > 0 and left:
            text += f", eta ~{_duration(left / rate)}"
        return text

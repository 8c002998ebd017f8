"""BatchesEndedTrigger: one trigger waiting on all the batches of a job that are in flight.

A job with ten batches defers once per wait with one trigger, not ten: each poll interval
it asks for every batch still processing (one ``GET`` each, concurrently, on the shared
async client of the connection), so it makes no more calls than ten single-batch triggers
and holds one task and one set of counters. The wait ends when ``any`` batch has ended
(the job has room to create its next shard) or when ``all`` have (the round is over).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import TriggerEvent

from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID
from airflow_provider_anthropix.triggers.polling import Poll, PollingTrigger, duration, refused, retry_hint_of

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from airflow_provider_anthropix.api.async_client import AsyncClient
    from airflow_provider_anthropix.api.errors import AnthropixError
    from airflow_provider_anthropix.api.models import MessageBatch
    from airflow_provider_anthropix.triggers.polling import PollingOptions

WAIT_FOR = ("any", "all")


class BatchesEndedTrigger(PollingTrigger):
    """Poll several batches until ``wait_for`` of them have ended, or the deadline passes; yield one event.

    The event is ``{"status": "success" | "error" | "timeout", "ended": {batch_id: request_counts},
    "message": str}``. ``success`` says which batches ended; the job reads their outcome itself.

    :param batch_ids: the batches to wait for.
    :param anthropix_conn_id: the Airflow connection (read asynchronously; its key never leaves it).
    :param wait_for: ``any`` (the first batch that ends ends the wait) or ``all``.
    :param job_progress: the job's totals (``requests``, ``requests_done`` by batches not polled here,
        ``batches``, ``batches_ended``, ``round``), so the progress line speaks for the whole job.
    :param options: :class:`~airflow_provider_anthropix.triggers.polling.PollingOptions`, see
        :class:`~airflow_provider_anthropix.triggers.polling.PollingTrigger`: a failed poll is one in
        which every call failed transiently.
    """

    def __init__(
        self,
        batch_ids: list[str],
        anthropix_conn_id: str = DEFAULT_CONN_ID,
        wait_for: str = "all",
        job_progress: dict[str, int] | None = None,
        **options: Unpack[PollingOptions],
    ) -> None:
        super().__init__(anthropix_conn_id=anthropix_conn_id, **options)
        if wait_for not in WAIT_FOR:
            raise ValueError(f"wait_for must be one of {', '.join(WAIT_FOR)}, got {wait_for!r}")
        if not batch_ids:
            raise ValueError("batch_ids is empty: there is nothing to wait for")
        self.batch_ids = [str(b) for b in batch_ids]
        self.wait_for = wait_for
        self.job_progress = dict(job_progress or {})
        self._begin()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return self._classpath(), {
            "batch_ids": list(self.batch_ids),
            "wait_for": self.wait_for,
            "job_progress": dict(self.job_progress),
            **self._polling_options(),
        }

    def _subject(self) -> str:
        return f"batches {', '.join(self.batch_ids)}"

    def _begin(self) -> None:
        self._pending = list(self.batch_ids)
        self._ended: dict[str, MessageBatch] = {}
        self._latest: dict[str, MessageBatch] = {}

    async def _poll(self, client: AsyncClient) -> Poll:
        from airflow_provider_anthropix.api.errors import AnthropixError
        from airflow_provider_anthropix.api.models import MessageBatch

        answers = await asyncio.gather(*(client.get_batch(b) for b in self._pending), return_exceptions=True)
        hints: list[float] = []
        failed: list[AnthropixError] = []
        for batch_id, answer in zip(self._pending, answers, strict=True):
            if isinstance(answer, MessageBatch):
                self._latest[batch_id] = answer
                if answer.is_ended:
                    self._ended[batch_id] = answer
                continue
            if not isinstance(answer, AnthropixError):
                raise answer  # a bug, not the API: let the triggerer report it
            end = refused(f"batch {batch_id}", answer)
            if end is not None:
                return end
            failed.append(answer)
            hint = retry_hint_of(answer)
            if hint is not None:
                hints.append(hint)
        self._pending = [b for b in self._pending if b not in self._ended]
        if self._ended and (self.wait_for == "any" or not self._pending):
            return Poll(end=("success", self._describe(None) + "; " + f"{len(self._ended)} ended"))
        if failed and len(failed) == len(answers):
            return Poll(failure=failed[-1], failed=f"{len(failed)} batch(es)", retry_hint=max(hints, default=None))
        return Poll()

    def _event(self, status: str, message: str) -> TriggerEvent:
        payload = {batch_id: batch.request_counts.to_dict() for batch_id, batch in self._ended.items()}
        return TriggerEvent({"status": status, "ended": payload, "message": message})

    def _done(self) -> int:
        return sum(batch.request_counts.done for batch in self._latest.values())

    def _timeout_message(self) -> str:
        return f"batches had not ended by the deadline {self.deadline}: {self._describe(None)}"

    def _describe(self, rate: float | None) -> str:
        """``round 0: 3/10 batches ended, 412,000/1,000,000 requests done, eta ~40 min`` for the whole job."""
        latest = self._latest
        job = self.job_progress
        ended_here = sum(1 for b in latest.values() if b.is_ended)
        batches = job.get("batches", len(self.batch_ids))
        batches_ended = job.get("batches_ended", 0) + ended_here
        total = job.get("requests") or sum(b.request_counts.total for b in latest.values())
        done = job.get("requests_done", 0) + self._done()
        text = f"round {job.get('round', 0)}: {batches_ended}/{batches} batches ended, {done:,}/{total:,} requests done"
        left = sum(b.request_counts.processing for b in latest.values())
        if rate and rate > 0 and left:
            text += f", eta ~{duration(left / rate)}"
        return text

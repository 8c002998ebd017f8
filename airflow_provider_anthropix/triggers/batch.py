"""BatchEndedTrigger: waits in the triggerer until a batch has ended, without blocking the loop.

A triggerer runs thousands of triggers on one event loop. This one awaits the shared
``httpx`` client of its connection (one pool per connection and loop, with its own
admission gate, see :func:`airflow_provider_anthropix.api.shared_async_client`; the
connection itself is read once a minute per loop, see ``hooks/config_cache.py``): no thread
per poll, no client per trigger, no blocking call. The loop itself (jitter, backoff, the
deadline) is :class:`~airflow_provider_anthropix.triggers.polling.PollingTrigger`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.triggers.base import TriggerEvent

from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID
from airflow_provider_anthropix.triggers.polling import Poll, PollingTrigger, duration, refused, retry_hint_of

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from airflow_provider_anthropix.api.async_client import AsyncClient
    from airflow_provider_anthropix.api.models import MessageBatch
    from airflow_provider_anthropix.triggers.polling import PollingOptions


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
        text += f", eta ~{duration(eta)}"
    return text


class BatchEndedTrigger(PollingTrigger):
    """Poll a batch until ``processing_status`` is ``ended`` or the deadline passes; yield one event.

    The event is ``{"status": "success" | "error" | "timeout", "batch": <batch dict>, "message": str}``.
    ``success`` only says the batch has ended: how its requests fared is the caller's outcome policy.
    ``batch`` is the last batch object seen (``{"id": ...}`` when none was).

    :param batch_id: the batch to wait for.
    :param anthropix_conn_id: the Airflow connection (read asynchronously; its key never leaves it).
    :param options: :class:`~airflow_provider_anthropix.triggers.polling.PollingOptions`, see
        :class:`~airflow_provider_anthropix.triggers.polling.PollingTrigger`: a failed poll is one
        whose call failed transiently (5xx, 529, 429, network); a progress line is also logged at
        every change of ``processing_status``.
    """

    def __init__(
        self, batch_id: str, anthropix_conn_id: str = DEFAULT_CONN_ID, **options: Unpack[PollingOptions]
    ) -> None:
        super().__init__(anthropix_conn_id=anthropix_conn_id, **options)
        self.batch_id = batch_id
        self._begin()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return self._classpath(), {"batch_id": self.batch_id, **self._polling_options()}

    def _subject(self) -> str:
        return f"batch {self.batch_id}"

    def _begin(self) -> None:
        self._last: MessageBatch | None = None

    async def _poll(self, client: AsyncClient) -> Poll:
        from airflow_provider_anthropix.api.errors import AnthropixError

        try:
            batch = await client.get_batch(self.batch_id)
        except AnthropixError as exc:
            return refused(self._subject(), exc) or Poll(
                failure=exc, failed=self._subject(), retry_hint=retry_hint_of(exc)
            )
        self._last = batch
        if batch.is_ended:
            return Poll(end=("success", f"{describe_progress(batch, None)}; ended at {batch.ended_at}"))
        return Poll()

    def _event(self, status: str, message: str) -> TriggerEvent:
        payload = self._last.to_dict() if self._last is not None else {"id": self.batch_id}
        return TriggerEvent({"status": status, "batch": payload, "message": message})

    def _done(self) -> int:
        return self._last.request_counts.done if self._last is not None else 0

    def _phase(self) -> str:
        return self._last.processing_status if self._last is not None else ""

    def _describe(self, rate: float | None) -> str:
        return describe_progress(self._last, rate) if self._last is not None else self._subject()

    def _timeout_message(self) -> str:
        last = self._last
        return f"batch {self.batch_id} had not ended by the deadline {self.deadline}" + (
            f" ({describe_progress(last, None)})" if last is not None else ""
        )

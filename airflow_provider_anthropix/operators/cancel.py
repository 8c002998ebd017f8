"""CancelBatchOperator: stop a batch; optionally wait (deferred) until it has ended."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf
from airflow.sdk.exceptions import AirflowException

from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID
from airflow_provider_anthropix.mixins import AnthropixHookMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_anthropix.api.models import MessageBatch


def describe_counts(batch: MessageBatch) -> str:
    """``batch msgbatch_x ended: 2 succeeded, 0 errored, 3 canceled, 0 expired, 0 processing of 5``.

    Every count, the canceled one included: after a cancel it is the number a person looks for.
    """
    counts = batch.request_counts
    return (
        f"batch {batch.id} {batch.processing_status}: {counts.succeeded:,} succeeded, {counts.errored:,} errored, "
        f"{counts.canceled:,} canceled, {counts.expired:,} expired, {counts.processing:,} processing "
        f"of {counts.total:,}"
    )


class CancelBatchOperator(AnthropixHookMixin, BaseOperator):
    """Cancel a Message Batch by id; returns a summary of the batch (counts, status, ``results_url``).

    Cancelling a batch that has already ended is not an error: it is logged and the summary
    returned. Requests already in flight may still finish; the rest come back ``canceled``
    once the batch has ended, which takes a little while: ``wait_for_end`` waits for that
    (in the triggerer when deferrable), so a downstream task can fetch the partial results.

    :param batch_id: the batch to cancel (templated).
    :param anthropix_conn_id: the Airflow connection.
    :param wait_for_end: wait until the batch has ended after the cancel.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between polls while waiting.
    :param wait_timeout: seconds to wait for the end before failing.
    """

    template_fields: Sequence[str] = ("batch_id", "anthropix_conn_id")
    ui_color = "#e8c4c4"

    def __init__(
        self,
        *,
        batch_id: str,
        anthropix_conn_id: str = DEFAULT_CONN_ID,
        wait_for_end: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        wait_timeout: float = 3600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.anthropix_conn_id = anthropix_conn_id
        self.wait_for_end = wait_for_end
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_anthropix.triggers.deferral import defer_until_ended
        from airflow_provider_anthropix.workflow.events import batch_summary

        batch = self._cancel()
        if batch.is_ended or not self.wait_for_end:
            return batch_summary(batch)
        if self.deferrable:
            defer_until_ended(
                self, batch.id, conn_id=self.anthropix_conn_id, poll_interval=self.poll_interval, wait=self.wait_timeout
            )
        return batch_summary(self._wait(batch))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow_provider_anthropix.triggers.deferral import read_event
        from airflow_provider_anthropix.workflow.events import batch_summary, parse_batch_event

        status, batch, message = read_event(parse_batch_event, event)
        if status == "success" and batch is not None:
            self.log.info("Batch %s has ended after the cancel: %s", batch.id, describe_counts(batch))
            return batch_summary(batch)
        raise AirflowException(message or f"waiting for canceled batch {self.batch_id} to end failed")

    def _cancel(self) -> MessageBatch:
        from airflow_provider_anthropix.api.errors import AnthropixError, BadRequestError, ConflictError

        try:
            batch = self.hook.cancel_batch(self.batch_id)
        except (BadRequestError, ConflictError) as exc:
            # The API refuses to cancel a batch that has ended; find out whether that is why.
            current = self._get(self.batch_id)
            if current.is_ended:
                self.log.info(
                    "Batch %s had already ended (at %s); nothing to cancel: %s",
                    current.id,
                    current.ended_at,
                    describe_counts(current),
                )
                return current
            raise self.api_failure(exc, f"canceling batch {self.batch_id}") from None
        except AnthropixError as exc:
            raise self.api_failure(exc, f"canceling batch {self.batch_id}") from None
        self.log.info(
            "Cancel requested for batch %s (cancel initiated at %s); now %s",
            batch.id,
            batch.cancel_initiated_at,
            describe_counts(batch),
        )
        return batch

    def _get(self, batch_id: str) -> MessageBatch:
        from airflow_provider_anthropix.api.errors import AnthropixError

        try:
            return self.hook.get_batch(batch_id)
        except AnthropixError as exc:
            raise self.api_failure(exc, f"checking batch {batch_id}") from None

    def _wait(self, batch: MessageBatch) -> MessageBatch:
        from airflow_provider_anthropix.triggers.batch import describe_progress

        deadline = time.monotonic() + self.wait_timeout
        while not batch.is_ended:
            if time.monotonic() > deadline:
                raise AirflowException(
                    f"Batch {batch.id} had not ended {self.wait_timeout:.0f} s after the cancel: "
                    f"{describe_progress(batch, None)}"
                )
            time.sleep(self.poll_interval)
            batch = self._get(batch.id)
        self.log.info("Batch %s has ended after the cancel: %s", batch.id, describe_counts(batch))
        return batch

"""BatchEndedSensor: wait until a batch has ended, then decide whether its outcome is good enough.

Three ways to wait, one outcome policy:

- deferrable (the default when ``[operators] default_deferrable`` is on): the wait happens in
  the triggerer through :class:`~airflow_provider_anthropix.triggers.batch.BatchEndedTrigger`,
  holding no worker slot;
- ``mode="poke"``: a worker polls with the sync client;
- ``mode="reschedule"``: a worker polls once per run and gives its slot back in between.

Once the batch has ended, :func:`evaluate_outcome` applies ``max_errored_ratio``,
``fail_on_canceled`` and ``fail_on_expired`` and logs the decision with the counts. The XCom
is a small summary (:func:`batch_summary`): counts, ``ended_at``, ``results_url``; never results.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from airflow_provider_anthropix._lazy import lazy_exports
from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID
from airflow_provider_anthropix.links import AnthropicConsoleLink
from airflow_provider_anthropix.mixins import AnthropixHookMixin

__all__ = ["BatchEndedSensor", "Outcome", "batch_summary", "evaluate_outcome", "validate_event"]

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_anthropix.api.models import MessageBatch
    from airflow_provider_anthropix.workflow.events import batch_summary
    from airflow_provider_anthropix.workflow.outcome import Outcome, evaluate_outcome

# Kept importable from here for DAGs written against 0.1.0; loaded only when asked for.
__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        "Outcome": "airflow_provider_anthropix.workflow.outcome",
        "batch_summary": "airflow_provider_anthropix.workflow.events",
        "evaluate_outcome": "airflow_provider_anthropix.workflow.outcome",
    },
)

#: A batch cannot run longer than 24 h (it expires); an hour on top covers queueing and polling.
DEFAULT_TIMEOUT = timedelta(hours=25)
ON_TIMEOUT_CHOICES = ("fail", "cancel")


def validate_event(event: Any) -> tuple[str, MessageBatch | None, str]:
    """The trigger's event, checked (a malformed one fails the task, naming it)."""
    from airflow_provider_anthropix.triggers.deferral import read_event
    from airflow_provider_anthropix.workflow.events import parse_batch_event

    return read_event(parse_batch_event, event)


class BatchEndedSensor(AnthropixHookMixin, BaseSensorOperator):
    """Wait for a Message Batch to end, then apply an outcome policy; returns a small summary.

    :param batch_id: the batch to wait for (templated; usually ``create.output``).
    :param anthropix_conn_id: the Airflow connection.
    :param poll_interval: seconds between polls (in every mode).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param timeout: seconds to wait before giving up (default 25 h: batches expire after 24 h).
    :param on_timeout: ``"fail"`` or ``"cancel"`` (cancel the batch, then fail).
    :param max_errored_ratio: fail when more than this share of requests errored (1.0 = never).
    :param fail_on_canceled: fail when any request was canceled.
    :param fail_on_expired: fail when any request expired.
    :param max_poll_failures: consecutive transient poll failures tolerated (deferrable mode; the sync modes
        tolerate them until the timeout).
    :param progress_log_interval: seconds between progress lines in the triggerer log.
    """

    template_fields: Sequence[str] = ("batch_id", "anthropix_conn_id")
    ui_color = "#f0e4d7"
    operator_extra_links = (AnthropicConsoleLink(),)

    def __init__(
        self,
        *,
        batch_id: str,
        anthropix_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        on_timeout: str = "fail",
        max_errored_ratio: float = 1.0,
        fail_on_canceled: bool = False,
        fail_on_expired: bool = False,
        max_poll_failures: int = 10,
        progress_log_interval: float = 300.0,
        **kwargs: Any,
    ) -> None:
        if on_timeout not in ON_TIMEOUT_CHOICES:
            raise ValueError(f"on_timeout must be one of {ON_TIMEOUT_CHOICES}, got {on_timeout!r}")
        if not 0.0 <= max_errored_ratio <= 1.0:
            raise ValueError(f"max_errored_ratio must be between 0 and 1, got {max_errored_ratio!r}")
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(timeout=timeout, **kwargs)
        self.batch_id = batch_id
        self.anthropix_conn_id = anthropix_conn_id
        self.poll_interval = float(poll_interval)
        self.deferrable = deferrable
        self.on_timeout = on_timeout
        self.max_errored_ratio = max_errored_ratio
        self.fail_on_canceled = fail_on_canceled
        self.fail_on_expired = fail_on_expired
        self.max_poll_failures = max_poll_failures
        self.progress_log_interval = progress_log_interval

    # -- entry points -------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        from airflow_provider_anthropix.triggers.batch import describe_progress
        from airflow_provider_anthropix.triggers.deferral import defer_until_ended

        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout:
                self._handle_timeout(None)
                raise
        batch = self._get_batch()
        if batch is not None and batch.is_ended:
            return self._finish(batch)
        if batch is not None:
            self.log.info("%s; deferring to the triggerer", describe_progress(batch, None))
        defer_until_ended(
            self,
            self.batch_id,
            conn_id=self.anthropix_conn_id,
            poll_interval=self.poll_interval,
            wait=self.timeout,
            max_poll_failures=self.max_poll_failures,
            progress_log_interval=self.progress_log_interval,
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_provider_anthropix.triggers.batch import describe_progress

        batch = self._get_batch()
        if batch is None:
            return False
        if not batch.is_ended:
            self.log.info("%s", describe_progress(batch, None))
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(batch))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        status, batch, message = validate_event(event)
        if status == "success" and batch is not None:
            return self._finish(batch)
        if status == "timeout":
            self._handle_timeout(batch)
            raise AirflowSensorTimeout(message or f"batch {self.batch_id} did not end in time")
        raise AirflowException(message or f"waiting for batch {self.batch_id} failed")

    # -- helpers ------------------------------------------------------------------------------

    def _get_batch(self) -> MessageBatch | None:
        """The batch, or None after a transient failure (the next poll tries again)."""
        from airflow_provider_anthropix.api.errors import AnthropixError
        from airflow_provider_anthropix.api.retry import is_transient

        try:
            return self.hook.get_batch(self.batch_id)
        except AnthropixError as exc:
            if is_transient(exc):
                self.log.warning("Polling batch %s failed (%s); trying again at the next poll", self.batch_id, exc)
                return None
            raise self.api_failure(exc, f"waiting for batch {self.batch_id}") from None

    def _finish(self, batch: MessageBatch) -> dict[str, Any]:
        from airflow_provider_anthropix.failures import enforce_outcome
        from airflow_provider_anthropix.workflow.events import batch_summary
        from airflow_provider_anthropix.workflow.outcome import evaluate_outcome

        outcome = evaluate_outcome(
            batch,
            max_errored_ratio=self.max_errored_ratio,
            fail_on_canceled=self.fail_on_canceled,
            fail_on_expired=self.fail_on_expired,
        )
        enforce_outcome(outcome, self.log)
        return batch_summary(batch)

    def _handle_timeout(self, batch: MessageBatch | None) -> None:
        from airflow_provider_anthropix.api.errors import AnthropixError

        if self.on_timeout != "cancel":
            return
        if batch is not None and batch.is_ended:
            return
        try:
            canceled = self.hook.cancel_batch(self.batch_id)
            self.log.warning(
                "Timed out waiting for batch %s: canceled it (now %s); requests not yet processed will be "
                "reported as canceled",
                canceled.id,
                canceled.processing_status,
            )
        except AnthropixError as exc:
            self.log.error("Timed out waiting for batch %s and could not cancel it: %s", self.batch_id, exc)

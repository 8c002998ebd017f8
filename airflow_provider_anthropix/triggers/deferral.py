"""Handing a task's wait to a trigger and reading the trigger's event back: one way for every task that defers.

The sensor and the cancel operator wait for one batch, the job for several; all three defer
the same way (a deadline the trigger keeps, Airflow's own deferral timeout a margin past it,
the first poll one interval later) and resume in ``execute_complete`` with an event that is
checked before it is trusted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from airflow.sdk.exceptions import AirflowException

if TYPE_CHECKING:
    from airflow.sdk.bases.operator import BaseOperator
    from airflow.triggers.base import BaseTrigger

T = TypeVar("T")


def deferral_timeout(wait: float, poll_interval: float) -> timedelta:
    """Airflow's timeout for a deferral whose trigger gives up after ``wait`` seconds.

    A margin past the trigger's own deadline, so the trigger's timeout event (which names the
    progress, and lets the sensor cancel the batch) arrives before Airflow's timeout does.
    """
    return timedelta(seconds=wait + max(60.0, 2 * poll_interval))


def deadline_in(seconds: float) -> str:
    """The trigger deadline ``seconds`` from now, as the ISO 8601 text a trigger serializes."""
    import pendulum

    return str((pendulum.now("UTC") + timedelta(seconds=seconds)).to_iso8601_string())


def defer_to(task: BaseOperator, trigger: BaseTrigger, *, wait: float, poll_interval: float) -> NoReturn:
    """Defer ``task`` to ``trigger`` (deadline ``wait`` seconds away); the task resumes in ``execute_complete``."""
    task.defer(trigger=trigger, method_name="execute_complete", timeout=deferral_timeout(wait, poll_interval))
    raise AssertionError("BaseOperator.defer() raises TaskDeferred")  # for mypy, which does not read Airflow's types


def defer_until_ended(
    task: BaseOperator, batch_id: str, *, conn_id: str, poll_interval: float, wait: float, **options: Any
) -> NoReturn:
    """Defer ``task`` until batch ``batch_id`` has ended, at most ``wait`` seconds.

    The first poll is one interval away: the task has just looked at the batch.
    ``options`` are further :class:`~airflow_provider_anthropix.triggers.batch.BatchEndedTrigger` arguments.
    """
    from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger

    trigger = BatchEndedTrigger(
        batch_id,
        conn_id,
        poll_interval=poll_interval,
        deadline=deadline_in(wait),
        first_poll_delay=poll_interval,
        **options,
    )
    defer_to(task, trigger, wait=wait, poll_interval=poll_interval)


def read_event(parse: Callable[[Any], T], event: Any) -> T:
    """The trigger's event through ``parse``; a malformed one fails the task, naming what is wrong."""
    from airflow_provider_anthropix.workflow.events import EventError

    try:
        return parse(event)
    except EventError as exc:
        raise AirflowException(str(exc)) from None

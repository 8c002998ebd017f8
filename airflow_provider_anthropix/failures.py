"""How this provider's failures become Airflow task failures: retryable, or failed at once.

Every error the package raises is an
:class:`~airflow_provider_anthropix.api.errors.AnthropixError`. Operators and the sensor turn
them into task failures through
:meth:`~airflow_provider_anthropix.mixins.AnthropixHookMixin.api_failure`, which calls
:func:`airflow_error`, instead of each deciding on its own, so a wrong key, a bad connection,
a bad input or a 4xx fails the task at once (``AirflowFailException``, no retries wasted, a
message that names the fix) in every task the same way, while transient failures (429, 5xx,
broken connections, an interrupted export) stay retryable. :func:`task_failure` is the same
choice for a message built here, and :func:`enforce_outcome` fails a task whose batch the
outcome policy refused.

Imported when a task runs, not when a DAG file is parsed: the operators import it inside
their methods.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_anthropix.api.errors import AnthropixAPIError, AnthropixConnectionError, AnthropixError
from airflow_provider_anthropix.api.retry import is_transient

if TYPE_CHECKING:
    from airflow_provider_anthropix.workflow.outcome import Outcome

_HINTS = {
    400: "the API rejected the request",
    401: "the API key was rejected. Check the API key (password) of connection {conn}",
    403: "the API key of connection {conn} may not do this (workspace or organisation settings)",
    404: "not found with connection {conn} (a wrong id, or a batch of another workspace)",
    413: "the request body is over the API's 256 MB limit",
}


def airflow_error(exc: AnthropixError, *, doing: str, conn_id: str) -> AirflowException:
    """The Airflow exception for ``exc`` raised while ``doing`` something with connection ``conn_id``.

    The one mapping of the package: API errors by their status and the server's hints (a 4xx
    fails at once with a hint naming the fix, a 429/5xx or a broken connection is retryable);
    every other error of the package by its own ``retryable``.

    :param exc: what the client, the hook, the workflow or the files raised.
    :param doing: what failed, for the message (``"creating the batch"``).
    :param conn_id: the connection, named in hints that point at it.
    """
    if isinstance(exc, AnthropixAPIError | AnthropixConnectionError):
        if is_transient(exc):
            return AirflowException(f"{doing} failed: {exc}")
        if isinstance(exc, AnthropixAPIError):
            hint = _HINTS.get(exc.status, "a retry cannot fix this").format(conn=repr(conn_id))
            return AirflowFailException(f"{doing} failed: {hint} ({exc})")
    return task_failure(f"{doing} failed: {exc}", retryable=exc.retryable)


def task_failure(message: str, *, retryable: bool) -> AirflowException:
    """A failure whose cause has already said whether a retry of the task can help."""
    return (AirflowException if retryable else AirflowFailException)(message)


def enforce_outcome(outcome: Outcome, log: logging.Logger | Any, *, note: str = "") -> None:
    """Log the outcome policy's verdict; a refused batch fails the task without retries (a retry sees the same batch).

    :param note: added to the failure's message (what has already happened, e.g. that the results landed).
    """
    if outcome.ok:
        log.info("%s", outcome.message)
        return
    message = outcome.message + note
    log.error("%s", message)
    raise AirflowFailException(message)

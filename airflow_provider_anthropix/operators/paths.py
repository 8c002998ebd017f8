"""Turning an operator argument into an ``ObjectStoragePath``, with errors that name the argument."""

from __future__ import annotations

from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException


def storage_path(value: str | ObjectStoragePath | None, conn_id: str | None, what: str) -> ObjectStoragePath:
    """``value`` as a path with a registered filesystem, or a task failure without retries naming ``what``.

    Relative paths are refused: they would depend on the worker's working directory, and the
    next task may run elsewhere. Nothing is read or written here.
    """
    from airflow_provider_anthropix.io.publish import DestinationError, resolve_destination

    if value is None:
        raise AirflowFailException(f"{what} is empty")
    try:
        return resolve_destination(value, conn_id, what)
    except DestinationError as exc:
        raise AirflowFailException(str(exc)) from None

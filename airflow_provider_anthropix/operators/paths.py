"""Turning an operator argument into an ``ObjectStoragePath``, with errors that name the argument."""

from __future__ import annotations

from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_anthropix.io.publish import DestinationError, check_protocol


def storage_path(value: str | ObjectStoragePath | None, conn_id: str | None, what: str) -> ObjectStoragePath:
    """``value`` as a path with a registered filesystem; a task failure without retries naming ``what`` if not.

    Relative paths are refused: they would depend on the worker's working directory, and the
    next task may run elsewhere.
    """
    if isinstance(value, ObjectStoragePath):
        path = ObjectStoragePath(value, conn_id=conn_id) if conn_id else value
    else:
        text = str(value or "").strip()
        if not text:
            raise AirflowFailException(f"{what} is empty")
        if "://" not in text and not text.startswith("/"):
            raise AirflowFailException(
                f"{what} {text!r} is relative: it would depend on the worker's directory; use an absolute path or a URI"
            )
        try:
            path = ObjectStoragePath(text, conn_id=conn_id) if conn_id else ObjectStoragePath(text)
        except ValueError as exc:
            raise AirflowFailException(f"unusable {what} {text}: {exc}") from None
    try:
        check_protocol(path)
    except DestinationError as exc:
        raise AirflowFailException(f"unusable {what} {value!s}: {exc}") from None
    return path

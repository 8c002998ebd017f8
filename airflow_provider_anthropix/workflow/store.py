"""The small key/value protocol the workflow layer keeps its durable state in.

Airflow 3.3's task state store (``context["task_state_store"]``) fits it, and so does one
shard of a batch job's journal (``_ShardSlot`` in :mod:`airflow_provider_anthropix.workflow.job`).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol


class StateStore(Protocol):
    """Durable small values, kept across retries of one task instance."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class ForgivingStore:
    """Wraps a store whose writes may fail (a database hiccup) so they never fail a created batch.

    After a batch exists, failing the task because its id could not be recorded would make the
    retry create a second one; logging the failure is the lesser harm. ``store=None`` is a
    store that remembers nothing (Airflow below 3.3).
    """

    def __init__(self, store: StateStore | None, log: logging.Logger | Any) -> None:
        self._store = store
        self._log = log

    @property
    def available(self) -> bool:
        return self._store is not None

    def get(self, key: str) -> Any:
        return self._store.get(key) if self._store is not None else None

    def set(self, key: str, value: Any) -> None:
        if self._store is None:
            return
        try:
            self._store.set(key, value)
        except Exception as exc:
            self._log.warning("Could not record %s in the state store (%s): a retry will not find it", key, exc)

    def delete(self, key: str) -> None:
        if self._store is None:
            return
        try:
            self._store.delete(key)
        except Exception as exc:
            self._log.warning("Could not delete %s from the state store (%s)", key, exc)

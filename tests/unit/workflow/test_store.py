"""ForgivingStore: a state-store write that fails is logged, never raised (it would make a retry pay twice)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_provider_anthropix.workflow.store import ForgivingStore
from tests.support.airflow import DictStateStore


class BrokenStore(DictStateStore):
    """Reads work; every write fails, as a database hiccup would."""

    def set(self, key: str, value: Any, **_: Any) -> None:
        raise RuntimeError("database is locked")

    def delete(self, key: str) -> None:
        raise RuntimeError("database is locked")


def test_failed_writes_are_warnings_and_reads_pass_through(caplog: pytest.LogCaptureFixture) -> None:
    inner = BrokenStore()
    inner.data["batch_id"] = "msgbatch_1"
    store = ForgivingStore(inner, logging.getLogger("test"))
    with caplog.at_level(logging.WARNING):
        store.set("batch_id", "msgbatch_2")
        store.delete("batch_id")
    assert store.available and store.get("batch_id") == "msgbatch_1"
    assert "Could not record batch_id" in caplog.text and "database is locked" in caplog.text
    assert "Could not delete batch_id" in caplog.text


def test_no_store_remembers_nothing() -> None:
    """Airflow below 3.3 has no task state store."""
    store = ForgivingStore(None, logging.getLogger("test"))
    store.set("batch_id", "msgbatch_1")
    store.delete("batch_id")
    assert not store.available and store.get("batch_id") is None

"""First-use mistakes in the connection get a message that names the URL, the connection and the fix.

A wrong port or https against the plain-HTTP emulator used to reach CreateBatchOperator as
"the create's answer was lost ... listing batches to find it failed", which suggests a billed
batch may exist. A connection that cannot be established sent nothing: the operator says so.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.operators.create import STATE_ATTEMPT, CreateBatchOperator
from tests.support.airflow import DictStateStore

KEY = "sk-ant-emulator-test-key"
REQUEST = {
    "custom_id": "a",
    "params": {"model": "claude-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(monkeypatch: pytest.MonkeyPatch, host: str, store: DictStateStore) -> str:
    conn = {"conn_type": "anthropix", "password": KEY, "host": host, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_NIGHTLY_LLM", json.dumps(conn))
    op = CreateBatchOperator(task_id="c", requests=[REQUEST], anthropix_conn_id="nightly_llm")
    context: dict[str, Any] = {"task_state_store": store}
    return op.execute(context)  # type: ignore[arg-type]


def test_a_wrong_port_says_not_sent_and_names_host_and_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    host = f"http://127.0.0.1:{_closed_port()}"
    store = DictStateStore()
    with pytest.raises(AirflowException) as info:
        _run(monkeypatch, host, store)
    message = str(info.value)
    assert message.startswith(
        "The batch was not sent: list_models: could not connect to"
    )  # the model check comes first
    assert f"{host} (connection 'nightly_llm'): connection refused" in message
    assert "answer was lost" not in message and "listing batches" not in message
    assert STATE_ATTEMPT not in store.data  # nothing to look for on the next try
    assert KEY not in message


def test_https_against_the_emulator_says_not_sent_and_use_http(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = emulator.url.replace("http://", "https://")
    with pytest.raises(AirflowException) as info:
        _run(monkeypatch, host, DictStateStore())
    message = str(info.value)
    assert message.startswith("The batch was not sent:")
    assert f"{host} (connection 'nightly_llm'): the TLS handshake failed" in message
    assert "use http:// in the host field" in message
    assert sum(emulator.stats()["calls"].values()) == 0


def test_a_host_without_a_scheme_is_a_settings_error_before_anything_is_sent(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = emulator.url.removeprefix("http://")
    with pytest.raises(AirflowException) as info:
        _run(monkeypatch, bare, DictStateStore())
    message = str(info.value)
    assert "connection 'nightly_llm': host (Base URL)" in message
    assert f"http://{bare}" in message
    assert sum(emulator.stats()["calls"].values()) == 0

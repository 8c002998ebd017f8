"""Duplicate result lines reaching a real fetch over HTTP: nothing may be published.

The emulator never repeats a line, so a small loopback server stands in for the API: it
serves a real ended batch and the emulator's real results stream with one line repeated.
The batch's request_counts are adjusted to the served lines, so the line and per-type
counts agree and only the duplicate custom_id check can stop the fetch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from tests.support.emulator import ended_batch, served_bytes

KEY = "sk-ant-duplicates-test-key"


class StreamServer:
    """Serves one batch object and its results bytes; counts the downloads."""

    def __init__(self) -> None:
        self.batch: dict[str, Any] = {}
        self.results = b""
        self.downloads = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("x-api-key") != KEY:
                    self._send(401, b'{"type":"error","error":{"type":"authentication_error","message":"no"}}')
                elif self.path.endswith("/results"):
                    server.downloads += 1
                    self._send(200, server.results, "application/binary")
                elif self.path.endswith(server.batch.get("id", "?")):
                    self._send(200, json.dumps(server.batch).encode())
                else:
                    self._send(404, b'{"type":"error","error":{"type":"not_found_error","message":"no"}}')

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.send_header("request-id", "req_duplicates")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stream_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[StreamServer]:
    server = StreamServer()
    conn = {"conn_type": "anthropix", "password": KEY, "host": server.url, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DUPLICATES", json.dumps(conn))
    try:
        yield server
    finally:
        server.close()


def test_a_repeated_result_line_fails_the_fetch_and_publishes_nothing(
    tmp_path: Path,
    emulator: EmulatorHandle,
    anthropix_conn_env: str,
    emulator_api_key: str,
    stream_server: StreamServer,
) -> None:
    batch = ended_batch(AnthropixHook(anthropix_conn_env), emulator, 40)
    stream = served_bytes(emulator, emulator_api_key, batch.id)
    lines = stream.splitlines(keepends=True)
    repeated = lines[5]
    kind = json.loads(repeated)["result"]["type"]
    raw = requests.get(
        f"{emulator.url}/v1/messages/batches/{batch.id}",
        headers={"x-api-key": emulator_api_key, "anthropic-version": "2026-10-21"},
        timeout=10,
    ).json()
    raw["request_counts"][kind] += 1  # the counts agree with the served lines: only the repeat is wrong
    raw["results_url"] = f"{stream_server.url}/v1/messages/batches/{batch.id}/results"
    stream_server.batch = raw
    stream_server.results = b"".join([*lines[:20], repeated, *lines[20:]])

    dest = tmp_path / "run"
    operator = FetchBatchResultsOperator(
        task_id="fetch", batch_id=batch.id, destination=f"file://{dest}", anthropix_conn_id="anthropix_duplicates"
    )
    with pytest.raises(AirflowFailException, match="1 lines repeat an earlier custom_id") as info:
        operator.execute({})  # type: ignore[arg-type]
    assert json.loads(repeated)["custom_id"] in str(info.value)
    assert stream_server.downloads == 1, "the fetch never downloaded the served stream"
    assert not dest.exists() or list(dest.rglob("*")) == [], f"something was left: {list(dest.rglob('*'))}"

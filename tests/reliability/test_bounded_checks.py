"""The checks before a create end in bounded time, whatever the server does (issue 20).

A hostile loopback server stands in for the API. Its ``/v1/models`` answers ``has_more``
with a cursor that does not advance (the same ``last_id`` for ever, or a loop of two), or
with new ids for ever; or it drips its answer (headers or body) a byte at a time, so no
read timeout ever fires. Its ``count_tokens`` drips the same way. The walk through the
model list must stop at a cursor it has seen or at the page cap, and the whole model check
and the whole token count must end by their one deadline, for the sync and the async
client, and through ``CreateBatchOperator`` in a real ``dag.test()``: the task fails,
saying what happened and how to skip the check, and nothing reaches the create endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_provider_anthropix.api import (
    AsyncClient,
    CheckDeadlineError,
    ClientConfig,
    ListingError,
    SyncClient,
)
from airflow_provider_anthropix.api.bounds import bounded
from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.cost import budget
from tests.support.airflow import DAG_OPEN, load_dag_source, migrated_airflow_home, states
from tests.support.http import QuietHandler

KEY = "sk-ant-bounded-checks-key"
MODEL = "claude-sonnet-4-5"
#: Seconds between two dripped bytes: well under any read timeout, so only a deadline ends the call.
DRIP = 0.1
#: The deadline the tests give a check; short so the suite stays fast, long enough for a loaded box.
DEADLINE = 1.5
#: What "bounded" means here: the deadline plus room for a slow, shared 2-core machine.
SLACK = 4.0


def _model(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": "2025-09-29T00:00:00Z"}


class Hostile(QuietHandler):
    """The API as a hostile server plays it, in the way ``mode`` says (a connection's host may not have a path)."""

    protocol_version = "HTTP/1.1"
    mode = "loop"
    calls: Counter[str] = Counter()

    def _route(self) -> tuple[str, str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return Hostile.mode, parts.path, parse_qs(parts.query)

    def do_GET(self) -> None:
        mode, path, query = self._route()
        Hostile.calls[f"GET {path}"] += 1
        if not path.startswith("/v1/models"):
            self.reply(404, {}, b'{"type":"error","error":{"type":"not_found_error","message":"no"}}')
            return
        after = (query.get("after_id") or [""])[0]
        if mode == "loop":  # the same page and the same cursor, for ever
            page = {"data": [_model("m-1")], "has_more": True, "first_id": "m-1", "last_id": "m-1"}
        elif mode == "cycle":  # two cursors taking turns: each new one names a page seen before
            last = "m-b" if after == "m-a" else "m-a"
            page = {"data": [_model(last)], "has_more": True, "first_id": last, "last_id": last}
        elif mode == "endless":  # a new cursor every time: only the page cap stops it
            last = f"m-{int(after.rpartition('-')[2] or 0) + 1}"
            page = {"data": [_model(last)], "has_more": True, "first_id": last, "last_id": last}
        else:  # drip-body / drip-headers: a valid page, sent too slowly
            page = {"data": [_model(MODEL)], "has_more": False, "first_id": MODEL, "last_id": MODEL}
        self._answer(mode, json.dumps(page).encode())

    def do_POST(self) -> None:
        mode, path, _ = self._route()
        Hostile.calls[f"POST {path}"] += 1
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if path == "/v1/messages/count_tokens":
            self._answer(mode, b'{"input_tokens": 12}')
        else:
            self.reply(500, {}, b'{"type":"error","error":{"type":"api_error","message":"must not be reached"}}')

    def _answer(self, mode: str, body: bytes) -> None:
        if mode.startswith("drip"):
            body += b" " * 100_000  # valid JSON still, and a drip that does not end by itself
        head = (
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "request-id: req_hostile\r\n\r\n"
        ).encode()
        if mode == "drip-headers":
            self._drip(head + body)
        elif mode == "drip-body":
            self.wfile.write(head)
            self._drip(body)
        else:
            self.wfile.write(head + body)

    def _drip(self, data: bytes) -> None:
        started = time.monotonic()
        for byte in data:
            if time.monotonic() - started > 60:
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return  # the client hung up: what the deadline should make it do
            time.sleep(DRIP)


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _config(url: str, mode: str) -> ClientConfig:
    # Read timeouts far longer than the deadline: only the deadline may end a dripped call.
    Hostile.mode = mode
    Hostile.calls.clear()
    return ClientConfig(api_key=KEY, base_url=url, read_timeout=30.0, max_retries=2)


def _sync_models(url: str, mode: str) -> None:
    with SyncClient(_config(url, mode), sleep=lambda _s: None) as client:
        client.all_models()


def _async_models(url: str, mode: str) -> None:
    async def walk() -> None:
        async with AsyncClient(_config(url, mode)) as client:
            await client.all_models()

    asyncio.run(walk())


def _sync_count(url: str, mode: str) -> None:
    with SyncClient(_config(url, mode), sleep=lambda _s: None) as client:
        for _ in range(3):
            client.count_tokens({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


def _async_count(url: str, mode: str) -> None:
    async def count() -> None:
        async with AsyncClient(_config(url, mode)) as client:
            for _ in range(3):
                await client.count_tokens({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})

    asyncio.run(count())


WALKS = {"sync": _sync_models, "async": _async_models}
COUNTS = {"sync": _sync_count, "async": _async_count}


@pytest.mark.parametrize("client", sorted(WALKS))
@pytest.mark.parametrize("mode", ["loop", "cycle"])
def test_a_cursor_that_does_not_advance_is_refused(hostile: str, client: str, mode: str) -> None:
    with pytest.raises(ListingError, match="a cursor it gave before: the listing does not advance"):
        WALKS[client](hostile, mode)
    # "loop" repeats its first cursor on page 2; "cycle" returns to its first one on page 3.
    assert Hostile.calls["GET /v1/models"] == (2 if mode == "loop" else 3)


@pytest.mark.parametrize("client", sorted(WALKS))
def test_a_listing_without_end_stops_at_the_page_cap(hostile: str, client: str) -> None:
    from airflow_provider_anthropix.api.bounds import MAX_MODEL_PAGES

    with pytest.raises(ListingError, match=f"still says has_more after {MAX_MODEL_PAGES} pages"):
        WALKS[client](hostile, "endless")
    assert Hostile.calls["GET /v1/models"] == MAX_MODEL_PAGES


@pytest.mark.parametrize("client", sorted(WALKS))
@pytest.mark.parametrize("mode", ["drip-body", "drip-headers"])
@pytest.mark.parametrize("call", ["models", "count"])
def test_a_dripping_server_cannot_stretch_the_deadline(hostile: str, client: str, mode: str, call: str) -> None:
    run = (WALKS if call == "models" else COUNTS)[client]
    started = time.monotonic()
    with bounded("the test's check", DEADLINE, skip="pass skip=True"), pytest.raises(CheckDeadlineError) as info:
        run(hostile, mode)
    elapsed = time.monotonic() - started
    assert DEADLINE * 0.9 <= elapsed < DEADLINE + SLACK, elapsed
    message = str(info.value)
    assert f"the test's check did not finish within {DEADLINE:g} s" in message
    assert "To go on without this check, pass skip=True" in message


def test_without_a_check_the_client_is_unbounded_as_before(hostile: str) -> None:
    """The deadline belongs to the check: outside one, a slow answer is only bounded by the read timeout."""
    config = ClientConfig(api_key=KEY, base_url=hostile, read_timeout=30.0, max_retries=0)
    Hostile.mode = "drip-headers"

    def walk() -> None:
        # Still reading when the test ends; the server's teardown then breaks the connection. That
        # is expected, and must not surface as an unhandled thread exception in a later test.
        with contextlib.suppress(AnthropixError), SyncClient(config) as client:
            client.all_models()

    worker = threading.Thread(target=walk, daemon=True)
    worker.start()
    worker.join(DEADLINE + 1.0)
    assert worker.is_alive()  # still reading the drip: nothing cut it


# -- through the operator, in a real DAG run ---------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_dags(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    with migrated_airflow_home(home, dags):
        yield dags


HEADER = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_anthropix.operators.create import CreateBatchOperator

REQUESTS = [
    {"custom_id": f"q-{i}", "params": {"model": "claude-sonnet-4-5", "max_tokens": 16,
     "messages": [{"role": "user", "content": f"question {i}"}]}}
    for i in range(3)
]
"""


def _connect(monkeypatch: pytest.MonkeyPatch, url: str, mode: str) -> None:
    Hostile.mode = mode
    Hostile.calls.clear()
    conn = {"conn_type": "anthropix", "password": KEY, "host": url, "extra": {"timeout": [5, 30]}}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", json.dumps(conn))


@pytest.fixture
def forget_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model list cached from an earlier test: each run asks the hostile server."""
    from airflow_provider_anthropix.hooks import anthropix

    monkeypatch.setattr(anthropix, "_models_cache", {})


@pytest.mark.parametrize("mode", ["loop", "drip-body"])
def test_the_model_check_cannot_hang_a_create_in_a_dag_run(
    airflow_dags: Path,
    hostile: str,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    forget_models: None,
) -> None:
    monkeypatch.setattr(budget, "MODEL_CHECK_SECONDS", DEADLINE)
    _connect(monkeypatch, hostile, mode)
    dag = load_dag_source(
        airflow_dags,
        f"bounded_models_{mode.replace('-', '_')}",
        HEADER,
        f"""
        {DAG_OPEN}
            CreateBatchOperator(task_id="create", requests=REQUESTS)
        """,
    )
    started = time.monotonic()
    dag_run = dag.test()
    elapsed = time.monotonic() - started
    assert states(dag_run) == {"create": "failed"}
    captured = capsys.readouterr()
    logs = captured.out + captured.err
    if mode == "loop":
        assert "the model list: page 2 says has_more with last_id 'm-1', a cursor it gave before" in logs
        assert Hostile.calls["GET /v1/models"] == 2
    else:
        assert f"the model check (GET /v1/models) did not finish within {DEADLINE:g} s" in logs
        assert elapsed < DEADLINE + SLACK + 10  # the DAG run's own start-up on top of the check
    assert "pass check_models=False to the operator" in logs
    assert not [name for name in Hostile.calls if "/v1/messages/batches" in name]  # no create was sent


def test_the_token_count_cannot_hang_a_create(
    hostile: str, monkeypatch: pytest.MonkeyPatch, forget_models: None
) -> None:
    from airflow_provider_anthropix.operators.create import CreateBatchOperator

    monkeypatch.setattr(budget, "TOKEN_COUNT_SECONDS", DEADLINE)
    _connect(monkeypatch, hostile, "drip-body")
    op = CreateBatchOperator(
        task_id="create",
        check_models=False,
        requests=[
            {
                "custom_id": f"q-{i}",
                "params": {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
            }
            for i in range(3)
        ],
    )
    started = time.monotonic()
    with pytest.raises(AirflowException) as info:
        op.execute({})  # type: ignore[arg-type]
    assert time.monotonic() - started < DEADLINE + SLACK
    message = str(info.value)
    assert "the cost estimate's token count (POST /v1/messages/count_tokens) did not finish within" in message
    assert "pass a smaller estimate_sample_size (now 50; 1 counts one request per model)" in message
    assert Hostile.calls["POST /v1/messages/count_tokens"] == 1
    assert not [name for name in Hostile.calls if "/v1/messages/batches" in name]

"""One contract, two clients: SyncClient and AsyncClient against the real emulator over loopback.

Every test runs twice (``client`` is parametrized). The async client runs on its own event
loop in a thread; the adapter turns its coroutines and async iterators into plain calls, so
the test bodies are shared word for word.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from airflow_provider_anthropix.api import (
    AnthropixConnectionError,
    AnthropixError,
    AnthropixResponseError,
    AnthropixTimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    ClientConfig,
    MessageBatch,
    NotFoundError,
    ResultsHostError,
    SyncClient,
)
from airflow_provider_anthropix.api.retry import is_transient
from airflow_provider_anthropix.emulator import EmulatorHandle, run_emulator

KEY = "sk-ant-contract-test-key"


class LoopThread:
    """An event loop in a daemon thread, for driving the async client from sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class AsyncAdapter:
    """Presents an AsyncClient with SyncClient's calling convention."""

    def __init__(self, client: AsyncClient, runner: LoopThread) -> None:
        self._client = client
        self._runner = runner

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if isinstance(result, AsyncIterator):
                return iter(self._runner.run(_collect(result)))
            return self._runner.run(result)

        return call


async def _collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with run_emulator(api_key=KEY, processing_seconds=0.3, seed=7, result_bytes=300) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh(emulator: EmulatorHandle) -> None:
    emulator.reset()


@pytest.fixture(scope="module")
def runner() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.stop()


SLEEPS: list[float] = []


def make_client(kind: str, config: ClientConfig, runner: LoopThread) -> Any:
    SLEEPS.clear()
    if kind == "sync":
        return SyncClient(config, sleep=SLEEPS.append)

    async def fake_sleep(seconds: float) -> None:
        SLEEPS.append(seconds)

    async def build() -> AsyncClient:
        return AsyncClient(config, sleep=fake_sleep)

    return AsyncAdapter(runner.run(build()), runner)


@pytest.fixture(params=["sync", "async"])
def client_factory(request: pytest.FixtureRequest, emulator: EmulatorHandle, runner: LoopThread) -> Callable[..., Any]:
    def factory(**overrides: Any) -> Any:
        settings: dict[str, Any] = {"api_key": KEY, "base_url": emulator.url, "max_retries": 2} | overrides
        return make_client(request.param, ClientConfig(**settings), runner)

    return factory


@pytest.fixture
def client(client_factory: Callable[..., Any]) -> Any:
    return client_factory()


def make_requests(n: int, prefix: str = "q") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "params": {
                "model": "claude-test",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Say hello to number {i}"}],
            },
        }
        for i in range(n)
    ]


def wait_ended(client: Any, batch_id: str) -> MessageBatch:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        batch: MessageBatch = client.get_batch(batch_id)
        if batch.is_ended:
            return batch
        time.sleep(0.05)
    raise AssertionError(f"{batch_id} did not end")


@pytest.mark.smoke
def test_create_poll_results_delete(client: Any) -> None:
    created = client.create_batch(make_requests(5))
    assert created.id.startswith("msgbatch_")
    assert created.processing_status == "in_progress"
    assert created.request_counts.total == 5
    assert created.results_url is None

    ended = wait_ended(client, created.id)
    assert ended.request_counts.succeeded == 5
    assert ended.ended_at is not None
    assert ended.results_url is not None

    results = client.get_results(ended)
    assert sorted(r["custom_id"] for r in results) == [f"q-{i}" for i in range(5)]
    assert {r["result"]["type"] for r in results} == {"succeeded"}

    deleted = client.delete_batch(created.id)
    assert deleted.id == created.id
    with pytest.raises(NotFoundError) as info:
        client.get_batch(created.id)
    assert info.value.request_id


def test_pagination_across_pages(client: Any) -> None:
    ids = [client.create_batch(make_requests(1, prefix=f"b{n}")).id for n in range(7)]
    newest_first = list(reversed(ids))

    first = client.list_batches(limit=3)
    assert [b.id for b in first.data] == newest_first[:3]
    assert first.has_more
    assert (first.first_id, first.last_id) == (newest_first[0], newest_first[2])

    second = client.list_batches(limit=3, after_id=first.last_id)
    assert [b.id for b in second.data] == newest_first[3:6]

    newer = client.list_batches(limit=3, before_id=second.first_id)
    assert [b.id for b in newer.data] == newest_first[:3]

    assert [b.id for b in client.iter_batches(page_size=2)] == newest_first


def test_results_stream_of_10000_lines_in_chunks(client: Any, emulator: EmulatorHandle) -> None:
    created = client.create_batch(make_requests(10_000))
    ended = wait_ended(client, created.id)

    chunks = list(client.iter_result_bytes(ended, chunk_size=16 * 1024))
    assert len(chunks) > 10
    body = b"".join(chunks)
    raw = requests.get(ended.results_url, headers={"x-api-key": KEY, "anthropic-version": "2026-10-21"}, timeout=30)
    assert body == raw.content
    assert body.count(b"\n") == 10_000

    parsed = list(client.iter_results(created.id))
    assert len(parsed) == 10_000
    assert len({r["custom_id"] for r in parsed}) == 10_000


def test_results_stream_cut_midway_is_resumed_identically(client: Any, emulator: EmulatorHandle) -> None:
    ended = wait_ended(client, client.create_batch(make_requests(2_000)).id)
    clean = b"".join(client.iter_result_bytes(ended))

    emulator.add_fault("cut", endpoint="results", after_bytes=len(clean) // 3, count=2)
    resumed = b"".join(client.iter_result_bytes(ended))
    assert resumed == clean
    assert emulator.stats()["calls"]["results"] == 4


@pytest.mark.smoke
def test_wrong_key_is_authentication_error(client_factory: Callable[..., Any], emulator: EmulatorHandle) -> None:
    client = client_factory(api_key="sk-wrong")
    with pytest.raises(AuthenticationError) as info:
        client.list_batches(limit=1)
    assert info.value.status == 401
    assert "sk-wrong" not in str(info.value)
    assert emulator.stats()["rejected"] == {"list": 1}, "401 must not be retried (refused calls count as rejected)"


def test_invalid_create_is_bad_request_naming_the_index(client: Any, emulator: EmulatorHandle) -> None:
    bad = make_requests(3)
    bad[2]["custom_id"] = "has spaces"
    with pytest.raises(BadRequestError) as info:
        client.create_batch(bad)
    assert "2" in info.value.message
    assert emulator.stats()["batches_created"] == 0


def test_transient_status_is_retried_and_honours_retry_after(client: Any, emulator: EmulatorHandle) -> None:
    batch = client.create_batch(make_requests(1))
    emulator.add_fault("status", endpoint="retrieve", status=429, retry_after=1.5, count=1)
    emulator.add_fault("status", endpoint="retrieve", status=529, count=1)
    assert client.get_batch(batch.id).id == batch.id
    assert emulator.stats()["calls"]["retrieve"] == 3
    assert SLEEPS[0] == 1.5
    assert 0 <= SLEEPS[1] <= 1.0


def test_retries_are_bounded(client: Any, emulator: EmulatorHandle) -> None:
    batch = client.create_batch(make_requests(1))
    emulator.add_fault("status", endpoint="retrieve", status=500, count=None)
    with pytest.raises(Exception, match="HTTP 500"):
        client.get_batch(batch.id)
    assert emulator.stats()["calls"]["retrieve"] == 3


def test_connection_reset_on_a_read_is_retried(client: Any, emulator: EmulatorHandle) -> None:
    batch = client.create_batch(make_requests(1))
    emulator.add_fault("reset", endpoint="retrieve", count=1)
    SLEEPS.clear()
    assert client.get_batch(batch.id).id == batch.id
    stats = emulator.stats()
    assert stats["faults_fired"] == 1 and stats["faults"] == []  # the reset really happened
    assert stats["calls"]["retrieve"] == 2  # the reset attempt and its retry
    assert len(SLEEPS) == 1  # one backoff between them


@pytest.mark.smoke
def test_create_with_lost_response_is_not_resent(client: Any, emulator: EmulatorHandle) -> None:
    emulator.add_fault("drop", endpoint="create", count=1)
    with pytest.raises(AnthropixConnectionError) as info:
        client.create_batch(make_requests(2))
    assert info.value.maybe_sent
    stats = emulator.stats()
    assert stats["calls"]["create"] == 1
    assert stats["batches_created"] == 1


def test_create_is_resent_after_429(client: Any, emulator: EmulatorHandle) -> None:
    emulator.add_fault("status", endpoint="create", status=429, retry_after=0.1, count=1)
    batch = client.create_batch(make_requests(2))
    assert batch.request_counts.total == 2
    assert emulator.stats()["batches_created"] == 1


def test_forged_results_url_never_receives_the_key(client: Any, emulator: EmulatorHandle) -> None:
    ended = wait_ended(client, client.create_batch(make_requests(1)).id)
    forged = MessageBatch.from_dict(ended.to_dict() | {"results_url": "http://127.0.0.2:9/steal"})
    with pytest.raises(ResultsHostError):
        client.get_results(forged)
    assert emulator.stats()["calls"].get("results", 0) == 0


def test_unreachable_host_is_a_connection_error(client_factory: Callable[..., Any]) -> None:
    client = client_factory(base_url="http://127.0.0.1:9", max_retries=0, connect_timeout=2.0)
    with pytest.raises(AnthropixConnectionError) as info:
        client.list_batches(limit=1)
    assert not info.value.maybe_sent


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_was_never_sent_and_names_the_url(
    client_factory: Callable[..., Any], emulator: EmulatorHandle
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    client = client_factory(base_url=url, max_retries=0, connection_id="nightly_llm")
    with pytest.raises(AnthropixConnectionError) as info:
        client.create_batch(make_requests(1))
    assert not info.value.maybe_sent
    message = str(info.value)
    assert f"could not connect to {url} (connection 'nightly_llm'): connection refused" in message
    assert "nothing was sent" in message and "check the port" in message
    assert KEY not in message


def test_https_against_a_plain_http_server_was_never_sent_and_says_use_http(
    client_factory: Callable[..., Any], emulator: EmulatorHandle
) -> None:
    """A TLS handshake failure happens before any request byte: never "maybe sent", and the fix is http://."""
    url = emulator.url.replace("http://", "https://")
    client = client_factory(base_url=url, max_retries=2)
    with pytest.raises(AnthropixConnectionError) as info:
        client.create_batch(make_requests(1))
    assert not info.value.maybe_sent
    message = str(info.value)
    assert f"could not connect to {url}: the TLS handshake failed" in message
    assert "use http:// in the host field" in message
    assert emulator.stats()["batches_created"] == 0
    assert len(SLEEPS) == 2  # never sent, so even a create was retried (and failed the same way)


def test_cancel_then_ended_with_canceled_counts(client: Any, emulator: EmulatorHandle) -> None:
    emulator.config.processing_seconds = 30
    try:
        batch = client.create_batch(make_requests(4))
        canceling = client.cancel_batch(batch.id)
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        ended = wait_ended(client, batch.id)
        assert ended.request_counts.canceled + ended.request_counts.succeeded == 4
        assert ended.request_counts.canceled > 0
    finally:
        emulator.config.processing_seconds = 0.3


def test_read_timeout_on_a_read_is_retried(client_factory: Callable[..., Any], emulator: EmulatorHandle) -> None:
    client = client_factory(read_timeout=0.3)
    batch = client.create_batch(make_requests(1))
    emulator.add_fault("latency", endpoint="retrieve", seconds=1.0, count=1)
    assert client.get_batch(batch.id).id == batch.id
    assert emulator.stats()["calls"]["retrieve"] == 2


def test_create_that_timed_out_is_not_resent(client_factory: Callable[..., Any], emulator: EmulatorHandle) -> None:
    client = client_factory(read_timeout=0.3)
    emulator.add_fault("latency", endpoint="create", seconds=1.0, count=1)
    with pytest.raises(AnthropixTimeoutError):
        client.create_batch(make_requests(2))
    time.sleep(1.0)  # let the slow create finish on the server
    assert emulator.stats()["calls"]["create"] == 1
    assert emulator.stats()["batches_created"] == 1


class _Answers(BaseHTTPRequestHandler):
    """Answers every request with HTTP 200 and the body set for its path, and counts them."""

    bodies: dict[str, bytes] = {}
    seen: list[str] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        self.seen.append(path)
        body = self.bodies.get(path, b"{}")
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def answers() -> Iterator[tuple[str, type[_Answers]]]:
    """A loopback server that answers 200 with whatever body a test sets (the emulator never sends garbage)."""
    handler = type("Answers", (_Answers,), {"bodies": {}, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("method", "call_name", "path", "body", "problem"),
    [
        ("get_batch", "retrieve", "/v1/messages/batches/b1", b"<html>upstream proxy says hi</html>", "not valid JSON"),
        ("get_batch", "retrieve", "/v1/messages/batches/b1", b'{"truncated": ', "not valid JSON"),
        (
            "get_batch",
            "retrieve",
            "/v1/messages/batches/b1",
            b'{"echo": "' + KEY.encode() + b'"}',
            "not a message batch",
        ),
        ("list_batches", "list", "/v1/messages/batches", b"[1, 2]", "not a page of a listing"),
        ("count_tokens", "count_tokens", "/v1/messages/count_tokens", b'{"tokens": 12}', "without a token count"),
    ],
)
def test_a_2xx_that_is_not_the_answer_is_a_response_error_and_not_retried(
    client_factory: Callable[..., Any],
    answers: tuple[str, type[_Answers]],
    method: str,
    call_name: str,
    path: str,
    body: bytes,
    problem: str,
) -> None:
    """A malformed 200 is the server's answer, not a broken connection: no retry here, none in a poller."""
    url, handler = answers
    handler.bodies[path] = body
    client = client_factory(base_url=url, max_retries=2, connection_id="nightly_llm")
    arguments: dict[str, Any] = {
        "get_batch": {"batch_id": "b1"},
        "list_batches": {"limit": 1},
        "count_tokens": {"params": {"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}},
    }[method]
    with pytest.raises(AnthropixResponseError) as info:
        getattr(client, method)(**arguments)
    error = info.value
    assert isinstance(error, AnthropixError) and not isinstance(error, AnthropixConnectionError)
    assert not is_transient(error)
    assert handler.seen == [path], "a malformed answer must not be retried"
    assert SLEEPS == []
    message = str(error)
    assert message.startswith(
        f"{call_name}: {url} (connection 'nightly_llm') answered HTTP 200 with a malformed answer"
    )
    assert problem in message
    assert KEY not in message


def test_a_create_answered_with_garbage_says_the_batch_may_exist(
    client_factory: Callable[..., Any], answers: tuple[str, type[_Answers]]
) -> None:
    url, handler = answers
    handler.bodies["/v1/messages/batches"] = b"\x00\xff not json"
    client = client_factory(base_url=url, max_retries=2)
    with pytest.raises(AnthropixResponseError, match="may have been done: look before sending it again") as info:
        client.create_batch(make_requests(1))
    assert str(info.value).startswith("create: ")
    assert handler.seen == ["/v1/messages/batches"]

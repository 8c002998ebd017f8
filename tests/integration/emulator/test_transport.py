"""The emulator as a server facing hostile or broken clients, over real sockets on loopback.

Every refusal must be the API's error envelope with a ``request-id`` (never uvicorn's plain
text, never a 500), and no client may hold the server's connections or memory: slow
headers and bodies are cut, header floods refused, and request bodies in flight share a
budget. Each test here failed against the emulator before these guards existed.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.errors import ResultsChangedError
from airflow_provider_anthropix.api.sync_client import SyncClient
from airflow_provider_anthropix.emulator import EmulatorHandle

BATCHES = "/v1/messages/batches"
HEADERS = {"anthropic-version": "2026-10-21"}


def request(custom_id: str, text: str = "Tell me about rivers", **params: Any) -> dict[str, Any]:
    body = {"model": "claude-test-1", "max_tokens": 512, "messages": [{"role": "user", "content": text}], **params}
    return {"custom_id": custom_id, "params": body}


def assert_envelope(response: httpx.Response, status: int, *needles: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error" and body["request_id"] == response.headers["request-id"]
    assert body["request_id"].startswith("req_")
    for needle in needles:
        assert needle in body["error"]["message"], body
    return str(body["error"]["message"])


def raw_exchange(url: str, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    received = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return bytes(received)


def parse_raw(response: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def ended_batch(emulator: EmulatorHandle, http: httpx.Client, n: int = 30) -> str:
    response = http.post(BATCHES, json={"requests": [request(f"r-{i:03d}") for i in range(n)]})
    assert response.status_code == 200, response.text
    emulator.advance(1)
    return str(response.json()["id"])


# -- malformed input: 400 in the envelope ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"requests":[{"custom_id":"a","params":{"model":"\xff\xfe"}}]}', "not valid UTF-8"),
        (b"\xff\xfe\x00{", "not valid JSON"),
        (b"[" * 100_000, "nests JSON arrays or objects too deeply"),
        (b'{"requests":[' + b'{"a":' * 100_000, "nests JSON arrays or objects too deeply"),
    ],
    ids=["non-utf8-string", "non-utf8-start", "nested-arrays", "nested-objects"],
)
def test_malformed_create_bodies_are_400(
    emulator: EmulatorHandle, emulator_http: httpx.Client, body: bytes, needle: str
) -> None:
    response = emulator_http.post(BATCHES, content=body, headers={"content-type": "application/json"})
    assert_envelope(response, 400, needle)
    assert emulator_http.get(BATCHES).status_code == 200, "the server still serves"
    assert emulator.stats()["batches_created"] == 0


@pytest.mark.parametrize(
    "wanted",
    ["bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000, "bytes=0-" + "9" * 5000, "bytes=abc", "bytes=1-2\u00e9"],
)
def test_garbage_range_headers_are_400(emulator: EmulatorHandle, emulator_http: httpx.Client, wanted: str) -> None:
    batch_id = ended_batch(emulator, emulator_http, 3)
    response = emulator_http.get(f"{BATCHES}/{batch_id}/results", headers={"range": wanted.encode("utf-8")})
    message = assert_envelope(response, 400, "range")
    assert len(message) < 200, "a 5,000-digit header is not echoed back whole"


@pytest.mark.parametrize("limit", ["-5", "9" * 5000, "1e3", "0x10", " 20", "1_0"])
def test_garbage_list_limits_are_400(emulator_http: httpx.Client, limit: str) -> None:
    message = assert_envelope(emulator_http.get(BATCHES, params={"limit": limit}), 400, "limit must be an integer")
    assert len(message) < 200


def test_huge_batch_id_is_a_short_404(emulator_http: httpx.Client) -> None:
    message = assert_envelope(emulator_http.get(f"{BATCHES}/msgbatch_{'x' * 30000}"), 404)
    assert len(message) < 200


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"GET /v1/messages/batches HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        b"GET /v1/messages/batches HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
    ids=["binary-request-line", "content-length-5000-digits", "header-without-colon"],
)
def test_requests_the_parser_refuses_get_the_envelope(emulator: EmulatorHandle, data: bytes) -> None:
    status, headers, body = parse_raw(raw_exchange(emulator.url, data))
    assert status == 400 and headers["content-type"] == "application/json"
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["request_id"] == headers["request-id"]


def test_a_chunked_body_with_a_garbage_content_length_is_400(emulator: EmulatorHandle, emulator_api_key: str) -> None:
    # A content-length the parser lets through but that is no byte count must not crash int().
    head = (
        "POST /v1/messages/batches HTTP/1.1\r\nHost: x\r\n"
        f"x-api-key: {emulator_api_key}\r\nanthropic-version: 2026-10-21\r\n"
        'content-length: 12\r\ncontent-length: 12\r\n\r\n{"requests":'
    )
    status, _, body = parse_raw(raw_exchange(emulator.url, head.encode()))
    assert status == 400 and body["type"] == "error"


# -- the admin clock ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"advance": NaN}',
        b'{"advance": 1e308}',
        b'{"advance": "inf"}',
        b'{"advance": -1}',
        b"[1]",
        b'{"advance": true}',
        b'{"advance": 1, "colour": 2}',
    ],
)
def test_admin_clock_refuses_absurd_values_and_creates_keep_working(
    emulator: EmulatorHandle, emulator_http: httpx.Client, body: bytes
) -> None:
    response = emulator_http.post("/_emulator/clock", content=body, headers={"content-type": "application/json"})
    assert_envelope(response, 400)
    created = emulator_http.post(BATCHES, json={"requests": [request("after-clock")]})
    assert created.status_code == 200, created.text
    assert created.json()["created_at"].startswith(time.strftime("%Y", time.gmtime()))


@pytest.mark.parametrize("seconds", [math.nan, math.inf, 1e308, -1.0])
def test_handle_advance_refuses_absurd_values(emulator: EmulatorHandle, seconds: float) -> None:
    with pytest.raises(ValueError, match=r"finite|forward|at most"):
        emulator.advance(seconds)
    emulator.advance(86_400 * 365)  # a year is fine


# -- authentication comes before faults and statistics ------------------------------------------------


def test_unauthenticated_calls_neither_consume_faults_nor_count(
    emulator: EmulatorHandle, emulator_api_key: str
) -> None:
    emulator.add_fault("status", endpoint="list", status=529)
    for headers in ({"x-api-key": "wrong"}, {}, {"x-api-key": emulator_api_key, "anthropic-version": "1999-01-01"}):
        response = httpx.get(emulator.url + BATCHES, headers={**HEADERS, **headers})
        assert response.status_code in (400, 401)
    stats = emulator.stats()
    assert stats["calls"] == {} and stats["faults_fired"] == 0 and len(stats["faults"]) == 1
    assert stats["rejected"] == {"list": 3}
    good = httpx.get(emulator.url + BATCHES, headers={**HEADERS, "x-api-key": emulator_api_key})
    assert good.status_code == 529, "the armed fault is still there for the real client"
    assert emulator.stats()["calls"] == {"list": 1} and emulator.stats()["faults_fired"] == 1


# -- bounded resources ------------------------------------------------------------------------------


@pytest.fixture
def guarded(emulator_factory: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    return emulator_factory(
        api_key="k",
        header_seconds=0.5,
        body_seconds=0.5,
        max_header_bytes=4096,
        max_body_bytes=15_000,
        max_inflight_body_bytes=20_000,
    )


def served(url: str) -> int:
    return httpx.get(url + BATCHES, headers={**HEADERS, "x-api-key": "k"}, timeout=10).status_code


def test_slow_loris_is_cut_and_others_are_served(guarded: EmulatorHandle) -> None:
    loris = connect(guarded.url)
    stop = threading.Event()

    def drip() -> None:
        # One header byte every 50 ms, forever: without a header deadline this holds the connection.
        try:
            loris.sendall(b"GET /v1/messages/batches HTTP/1.1\r\nHost: x\r\n")
            while not stop.wait(0.05):
                loris.sendall(b"X")
        except OSError:
            pass

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        assert served(guarded.url) == 200, "another client is served while the loris drips"
        status, headers, body = parse_raw(read_until_closed(loris))
        assert status == 408 and "headers did not arrive" in body["error"]["message"]
        assert headers["connection"] == "close"
        assert served(guarded.url) == 200
    finally:
        stop.set()
        dripper.join()
        loris.close()


def test_silent_connection_is_closed(guarded: EmulatorHandle) -> None:
    with connect(guarded.url) as silent:
        status, _, _ = parse_raw(read_until_closed(silent))
    assert status == 408


def test_slow_second_request_on_a_keep_alive_connection_is_cut(guarded: EmulatorHandle) -> None:
    with connect(guarded.url) as sock:
        sock.sendall(
            b"GET /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nanthropic-version: 2026-10-21\r\n\r\n"
        )
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /v1/messages/batches HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        status, _, _ = parse_raw(read_until_closed(sock))
    assert status == 408


def test_header_flood_is_431(guarded: EmulatorHandle) -> None:
    flood = b"GET /v1/messages/batches HTTP/1.1\r\nHost: x\r\n" + b"x-pad: " + b"a" * 10_000 + b"\r\n"
    status, _, body = parse_raw(raw_exchange(guarded.url, flood))
    assert status == 431 and "4,096 bytes" in body["error"]["message"]
    assert served(guarded.url) == 200


def test_slow_body_is_408(guarded: EmulatorHandle) -> None:
    head = b"POST /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nanthropic-version: 2026-10-21\r\n"
    with connect(guarded.url) as sock:
        sock.sendall(head + b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n" + b'{"requests": [')
        status, headers, body = parse_raw(read_until_closed(sock))
    assert status == 408 and "did not arrive within 0.5 s" in body["error"]["message"]
    assert headers["connection"] == "close" and headers["request-id"] == body["request_id"]
    assert guarded.stats()["batches_created"] == 0


def test_bodies_in_flight_share_a_budget(guarded: EmulatorHandle) -> None:
    head = b"POST /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nanthropic-version: 2026-10-21\r\n"
    body = json.dumps({"requests": [request(f"b{i}", "x" * 80) for i in range(50)]}).encode()
    assert 8_000 < len(body) < 15_000
    with connect(guarded.url) as hog:
        # 15,000 bytes announced, a few sent: they are reserved until the body is done.
        hog.sendall(head + b"content-type: application/json\r\ncontent-length: 15000\r\n\r\n{")
        time.sleep(0.1)  # let the server start reading it (an ordering aid, not an assertion)
        busy = httpx.post(guarded.url + BATCHES, content=body, headers={**HEADERS, "x-api-key": "k"})
        assert_envelope(busy, 503, "budget of 20,000 bytes")
        assert busy.headers["retry-after"] == "1"
        read_until_closed(hog)  # the hog is cut by the body deadline, which frees its share
    ok = httpx.post(guarded.url + BATCHES, content=body, headers={**HEADERS, "x-api-key": "k"})
    assert ok.status_code == 200, ok.text


def test_a_chunked_body_counts_against_the_budget_as_it_grows(guarded: EmulatorHandle) -> None:
    head = b"POST /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nanthropic-version: 2026-10-21\r\n"
    body = json.dumps({"requests": [request(f"c{i}", "x" * 80) for i in range(50)]}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    with connect(guarded.url) as hog:
        hog.sendall(head + b"content-type: application/json\r\ncontent-length: 15000\r\n\r\n{")
        time.sleep(0.1)  # let the server start reading it (an ordering aid, not an assertion)
        # No content-length: nothing is reserved up front; the bytes count as they arrive.
        busy = httpx.post(guarded.url + BATCHES, content=chunks(), headers={**HEADERS, "x-api-key": "k"})
        assert_envelope(busy, 503, "budget of 20,000 bytes")
        read_until_closed(hog)
    ok = httpx.post(guarded.url + BATCHES, content=chunks(), headers={**HEADERS, "x-api-key": "k"})
    assert ok.status_code == 200, ok.text


# -- replies break on word boundaries --------------------------------------------------------------


def test_padded_replies_break_on_word_boundaries(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    from airflow_provider_anthropix.emulator.outcomes import _FILLER

    vocabulary = set(_FILLER.split())
    requests = [request("c" * n, "Name a river") for n in range(1, 61)]
    requests += [request(f"short-{n}", "Name a river", max_tokens=n) for n in range(8, 40)]
    emulator.config.result_bytes = 900
    response = emulator_http.post(BATCHES, json={"requests": requests})
    emulator.advance(1)
    data = emulator_http.get(f"{BATCHES}/{response.json()['id']}/results").content
    for line in data.splitlines():
        text = json.loads(line)["result"]["message"]["content"][0]["text"]
        head = "Emulated reply to: Name a river"
        assert text.startswith(head[: len(text)]) or text.startswith(head)
        words = text[len(head) :].split() if text.startswith(head) else []
        broken = [w for w in words if w not in vocabulary]
        assert not broken, (text, broken)


# -- results that change: the etag and a duplicated line ------------------------------------------


def test_results_can_be_reshuffled_with_a_new_etag(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch_id = ended_batch(emulator, emulator_http)
    url = f"{BATCHES}/{batch_id}/results"
    before = emulator_http.get(url)
    etag = emulator.alter_results(batch_id, reshuffle=True)
    after = emulator_http.get(url)
    assert after.headers["etag"] == etag != before.headers["etag"]
    assert after.content != before.content
    assert sorted(after.content.splitlines()) == sorted(before.content.splitlines())
    # If-Range with the old etag: the range no longer applies, the new bytes come whole.
    stale = emulator_http.get(url, headers={"range": "bytes=100-", "if-range": before.headers["etag"]})
    assert stale.status_code == 200 and stale.content == after.content
    fresh = emulator_http.get(url, headers={"range": "bytes=100-", "if-range": etag})
    assert fresh.status_code == 206 and fresh.content == after.content[100:]


def test_a_result_line_can_be_duplicated_over_http(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch_id = ended_batch(emulator, emulator_http, 5)
    admin = f"/_emulator/batches/{batch_id}/results"
    before = emulator_http.get(f"{BATCHES}/{batch_id}/results").content.splitlines()
    answer = emulator_http.post(admin, json={"duplicate_line": 2})
    assert answer.status_code == 200 and answer.json()["id"] == batch_id
    after = emulator_http.get(f"{BATCHES}/{batch_id}/results")
    assert after.headers["etag"] == answer.json()["etag"]
    assert after.content.splitlines() == [*before[:3], before[2], *before[3:]]
    assert_envelope(emulator_http.post(admin, json={"duplicate_line": 6}), 400, "past the last line")
    assert_envelope(emulator_http.post(admin, json={"duplicate_line": -1}), 400, "integer >= 0")
    assert_envelope(emulator_http.post(admin, json={"shuffle": True}), 400, "unknown field")
    emulator.config.processing_seconds = 1000
    running = emulator_http.post(BATCHES, json={"requests": [request("x")]}).json()["id"]
    assert_envelope(emulator_http.post(f"/_emulator/batches/{running}/results", json={}), 400, "in_progress")


@pytest.fixture
def sync_client(emulator: EmulatorHandle, emulator_api_key: str) -> Iterator[SyncClient]:
    config = ClientConfig(api_key=emulator_api_key, base_url=emulator.url, max_retries=2)
    with SyncClient(config, sleep=lambda _s: None) as client:
        yield client


def test_sync_client_resume_meets_changed_bytes(
    emulator: EmulatorHandle, emulator_http: httpx.Client, sync_client: SyncClient
) -> None:
    emulator.config.result_bytes = 1000
    batch_id = ended_batch(emulator, emulator_http, 300)
    emulator.add_fault("cut", endpoint="results", after_bytes=150_000)
    chunks = sync_client.iter_result_bytes(batch_id, chunk_size=1 << 14)
    first = next(chunks)  # the download is under way on the first answer's bytes
    assert first
    emulator.alter_results(batch_id, reshuffle=True)
    with pytest.raises(ResultsChangedError, match="etag"):
        for _ in chunks:
            pass
    stats = emulator.stats()
    assert stats["faults_fired"] == 1 and stats["calls"]["results"] == 2, "cut once, then the resume saw new bytes"


def test_sync_client_resume_without_change_is_byte_identical(
    emulator: EmulatorHandle, emulator_http: httpx.Client, sync_client: SyncClient
) -> None:
    """The control of the test above: the same cut without a change resumes cleanly."""
    emulator.config.result_bytes = 1000
    batch_id = ended_batch(emulator, emulator_http, 300)
    clean = emulator_http.get(f"{BATCHES}/{batch_id}/results").content
    emulator.add_fault("cut", endpoint="results", after_bytes=150_000)
    assert b"".join(sync_client.iter_result_bytes(batch_id)) == clean
    assert emulator.stats()["faults_fired"] == 1


def test_sync_client_sees_a_duplicated_line(
    emulator: EmulatorHandle, emulator_http: httpx.Client, sync_client: SyncClient
) -> None:
    batch_id = ended_batch(emulator, emulator_http, 4)
    emulator.alter_results(batch_id, duplicate_line=0)
    ids = [line["custom_id"] for line in sync_client.iter_results(batch_id)]
    assert len(ids) == 5 and len(set(ids)) == 4 and ids[0] == ids[1]

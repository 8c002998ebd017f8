"""Every fault kind, armed in Python and over the admin endpoint, as a client on loopback sees it."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle, Fault, parse_fault_spec

BATCHES = "/v1/messages/batches"
ONE = {
    "requests": [
        {"custom_id": "a", "params": {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}}
    ]
}


def ended_batch(emulator: EmulatorHandle, http: httpx.Client, n: int = 40) -> str:
    body = {"requests": [{**ONE["requests"][0], "custom_id": f"r{i}"} for i in range(n)]}
    batch_id = str(http.post(BATCHES, json=body).json()["id"])
    emulator.advance(1)
    return batch_id


@pytest.mark.smoke
def test_status_fault_for_the_next_k_calls(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.add_fault("status", endpoint="list", status=529, count=2, retry_after=0.5, should_retry=True)
    for _ in range(2):
        response = emulator_http.get(BATCHES)
        assert response.status_code == 529
        assert response.json()["error"]["type"] == "overloaded_error"
        assert response.headers["retry-after"] == "0.5"
        assert response.headers["x-should-retry"] == "true"
        assert response.headers["request-id"] == response.json()["request_id"]
    assert emulator_http.get(BATCHES).status_code == 200
    stats = emulator.stats()
    assert stats["calls"]["list"] == 3 and stats["faults_fired"] == 2 and stats["faults"] == []


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (409, "conflict_error"),
        (408, "invalid_request_error"),
    ],
)
def test_status_fault_uses_the_api_error_types(
    emulator: EmulatorHandle, emulator_http: httpx.Client, status: int, error_type: str
) -> None:
    emulator.add_fault("status", status=status, retry_after=2)
    response = emulator_http.get(f"{BATCHES}/msgbatch_x")
    assert response.status_code == status and response.json()["error"]["type"] == error_type
    assert response.headers["retry-after"] == "2"


def test_faults_only_hit_their_endpoint(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.add_fault("status", endpoint="retrieve", status=500, count=None)
    assert emulator_http.get(BATCHES).status_code == 200
    assert emulator_http.get(f"{BATCHES}/msgbatch_x").status_code == 500
    assert emulator_http.get(f"{BATCHES}/msgbatch_x").status_code == 500  # count=None: every call
    emulator.clear_faults()
    assert emulator_http.get(f"{BATCHES}/msgbatch_x").status_code == 404


def test_latency_fault_makes_a_short_read_timeout_expire(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.add_fault("latency", endpoint="list", seconds=1.0)
    with pytest.raises(httpx.ReadTimeout):
        emulator_http.get(BATCHES, timeout=httpx.Timeout(5, read=0.2))
    assert emulator_http.get(BATCHES, timeout=httpx.Timeout(5, read=0.2)).status_code == 200


@pytest.mark.smoke
def test_reset_fault_resets_the_connection(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.add_fault("reset", endpoint="list")
    with pytest.raises(httpx.ReadError, match="reset"):
        emulator_http.get(BATCHES)
    assert emulator_http.get(BATCHES).status_code == 200


def test_dropped_create_still_creates_the_batch(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.add_fault("drop", endpoint="create")
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        emulator_http.post(BATCHES, json=ONE)
    listed = emulator_http.get(BATCHES).json()["data"]
    assert len(listed) == 1 and listed[0]["request_counts"]["processing"] == 1
    assert emulator.stats()["batches_created"] == 1


@pytest.mark.smoke
def test_cut_results_stream_then_resume_with_range(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch_id = ended_batch(emulator, emulator_http)
    url = f"{BATCHES}/{batch_id}/results"
    clean = emulator_http.get(url).content
    emulator.add_fault("cut", endpoint="results", after_bytes=5000)
    received = bytearray()

    def download() -> None:
        with emulator_http.stream("GET", url) as response:
            assert response.headers["content-length"] == str(len(clean))
            for chunk in response.iter_raw():
                received.extend(chunk)

    with pytest.raises(httpx.ReadError, match="reset"):  # a reset, not a timeout waiting for the rest
        download()
    assert bytes(received) == clean[:5000]
    rest = emulator_http.get(url, headers={"range": f"bytes={len(received)}-"})
    assert rest.status_code == 206
    assert bytes(received) + rest.content == clean


def test_faults_over_the_admin_endpoint(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    admin = "/_emulator/faults"
    armed = emulator_http.post(admin, json={"kind": "status", "endpoint": "list", "status": 500}).json()["faults"]
    assert armed[0]["kind"] == "status" and armed[0]["count"] == 1
    body = {"faults": [{"kind": "latency", "seconds": 0.01, "count": None}, {"kind": "reset", "endpoint": "cancel"}]}
    assert len(emulator_http.post(admin, json=body).json()["faults"]) == 3
    assert len(emulator_http.get(admin).json()["faults"]) == 3
    assert emulator_http.get(BATCHES).status_code == 500
    assert emulator_http.delete(admin).json() == {"faults": []}
    bad = emulator_http.post(admin, json={"kind": "explode"})
    assert bad.status_code == 400 and "unknown fault kind 'explode'" in bad.json()["error"]["message"]
    assert emulator_http.post(admin, json={"kind": "status", "colour": 1}).status_code == 400


def test_faults_fire_after_authentication(emulator: EmulatorHandle, emulator_api_key: str) -> None:
    """A client without the key gets its 401 and leaves the fault armed for the client under test."""
    emulator.add_fault("status", status=529)
    headers = {"anthropic-version": "2026-10-21"}
    assert httpx.get(emulator.url + BATCHES, headers={**headers, "x-api-key": "wrong"}).status_code == 401
    assert httpx.get(emulator.url + BATCHES, headers={**headers, "x-api-key": emulator_api_key}).status_code == 529


def test_fault_specs_and_their_checks() -> None:
    fault = parse_fault_spec("status,endpoint=retrieve,status=529,count=3,retry_after=1.5,should_retry=false")
    assert fault == Fault(kind="status", endpoint="retrieve", status=529, count=3, retry_after=1.5, should_retry=False)
    assert parse_fault_spec("kind=latency,seconds=0.2,count=*").count is None
    assert parse_fault_spec("cut,endpoint=results,after_bytes=100").after_bytes == 100
    for bad, message in [
        ("explode", "unknown fault kind"),
        ("status,endpoint=nowhere", "unknown endpoint"),
        ("cut,endpoint=create", "results endpoint only"),
        ("garble,endpoint=results", "not to results"),
        ("status,colour=red", "unknown fault field"),
        ("status,count=0", "count must be >= 1"),
        ("status,oops", "expected key=value"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_fault_spec(bad)


def test_faults_armed_at_start(emulator_factory: object) -> None:
    assert callable(emulator_factory)
    emu = emulator_factory(faults=[Fault(kind="status", endpoint="list", status=503)])
    headers = {"x-api-key": "k", "anthropic-version": "2026-10-21"}
    assert httpx.get(emu.url + BATCHES, headers=headers).status_code == 503
    assert httpx.get(emu.url + BATCHES, headers=headers).status_code == 200

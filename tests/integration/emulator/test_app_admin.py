"""The emulator's admin endpoints refuse what a web page could send them (issue 20).

The emulator listens on loopback, which every page open in the user's browser can reach.
A page may POST without a CORS preflight only a "simple" request: no custom headers (so no
``x-api-key`` nor ``Authorization``), a text/plain or form body, and the browser adds the
page's ``Origin``. Each such shape, against the clock and the reset endpoints, must be
refused in the API's error envelope and change nothing; the same calls with the key and a
JSON body (what the handle-less callers in tests, benchmarks and the e2e harness send) work.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle

KEY = "sk-ant-admin-test-key"
BATCHES = "/v1/messages/batches"


@pytest.fixture
def emu(emulator_factory: Any) -> EmulatorHandle:
    handle: EmulatorHandle = emulator_factory(api_key=KEY, admin=True, processing_seconds=1000)
    return handle


def _batch(emu: EmulatorHandle) -> str:
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21"}
    body = {
        "requests": [
            {
                "custom_id": "a",
                "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            }
        ]
    }
    response = httpx.post(emu.url + BATCHES, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _status(emu: EmulatorHandle, batch_id: str) -> str:
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21"}
    return str(httpx.get(f"{emu.url}{BATCHES}/{batch_id}", headers=headers).json()["processing_status"])


CLOCK = b'{"advance": 100000}'
#: What a page can send without a preflight (plus one it can only send with one: JSON without the key).
CROSS_SITE: dict[str, dict[str, Any]] = {
    "json-without-key": {"content": CLOCK, "headers": {"content-type": "application/json"}},
    "text-plain": {"content": CLOCK, "headers": {"content-type": "text/plain"}},
    "form": {"content": b"advance=100000", "headers": {"content-type": "application/x-www-form-urlencoded"}},
    "foreign-origin": {
        "content": CLOCK,
        "headers": {"content-type": "text/plain", "origin": "https://evil.example"},
    },
}


@pytest.mark.parametrize("endpoint", ["clock", "reset"])
@pytest.mark.parametrize("shape", sorted(CROSS_SITE))
def test_cross_site_shapes_are_refused_and_change_nothing(emu: EmulatorHandle, endpoint: str, shape: str) -> None:
    batch_id = _batch(emu)
    response = httpx.post(f"{emu.url}/_emulator/{endpoint}", **CROSS_SITE[shape])
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert response.headers["request-id"].startswith("req_")
    assert _status(emu, batch_id) == "in_progress"  # the clock did not move, the batch was not forgotten
    assert emu.stats()["batches"] == 1


@pytest.mark.parametrize(
    ("headers", "content", "status", "error_type", "words"),
    [
        ({"content-type": "text/plain"}, CLOCK, 415, "invalid_request_error", "content-type: application/json"),
        (
            {"content-type": "application/x-www-form-urlencoded"},
            b"advance=100000",
            415,
            "invalid_request_error",
            "not 'application/x-www-form-urlencoded'",
        ),
        ({}, CLOCK, 415, "invalid_request_error", "not none"),
        (
            {"content-type": "application/json", "origin": "https://evil.example"},
            CLOCK,
            403,
            "permission_error",
            "another origin",
        ),
        ({"content-type": "application/json", "x-api-key": "wrong"}, CLOCK, 401, "authentication_error", "invalid"),
    ],
)
def test_each_check_holds_on_its_own(
    emu: EmulatorHandle, headers: dict[str, str], content: bytes, status: int, error_type: str, words: str
) -> None:
    """With the key, a body that is not JSON or a foreign Origin is still refused (and a wrong key is)."""
    batch_id = _batch(emu)
    sent = {"x-api-key": KEY, **headers}
    response = httpx.post(f"{emu.url}/_emulator/clock", content=content, headers=sent)
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    assert words in response.json()["error"]["message"]
    assert _status(emu, batch_id) == "in_progress"


@pytest.mark.parametrize("auth", [{"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}])
def test_the_key_and_json_are_enough(emu: EmulatorHandle, auth: dict[str, str]) -> None:
    batch_id = _batch(emu)
    same_origin = {"origin": emu.url}  # a caller that names the emulator's own origin is not cross-site
    moved = httpx.post(f"{emu.url}/_emulator/clock", json={"advance": 100000}, headers={**auth, **same_origin})
    assert moved.status_code == 200, moved.text
    assert _status(emu, batch_id) == "ended"
    assert httpx.get(f"{emu.url}/_emulator/stats", headers=auth).json()["batches"] == 1
    assert httpx.post(f"{emu.url}/_emulator/reset", json={}, headers=auth).json() == {"reset": True}
    assert emu.stats()["batches"] == 0


def test_reads_need_the_key_too(emu: EmulatorHandle) -> None:
    for path in ("/_emulator/stats", "/_emulator/faults", "/_emulator/attempts?custom_id=a"):
        assert httpx.get(emu.url + path).status_code == 401, path
    assert httpx.delete(emu.url + "/_emulator/faults").status_code == 401


def test_an_emulator_that_takes_any_key_still_wants_one(emulator_factory: Any) -> None:
    """Without ``--api-key`` the API takes any key, but a missing one is refused: so are admin calls without."""
    emu = emulator_factory(admin=True)
    assert (
        httpx.post(f"{emu.url}/_emulator/reset", content=b"{}", headers={"content-type": "text/plain"}).status_code
        == 401
    )
    assert httpx.post(f"{emu.url}/_emulator/reset", json={}, headers={"x-api-key": "anything"}).status_code == 200

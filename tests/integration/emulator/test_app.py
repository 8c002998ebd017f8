"""The emulator's endpoints and rules over real HTTP (httpx on loopback), one behaviour per test."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle

BATCHES = "/v1/messages/batches"


def request(custom_id: str, text: str = "Summarise the news", **params: Any) -> dict[str, Any]:
    body = {"model": "claude-test-1", "max_tokens": 512, "messages": [{"role": "user", "content": text}], **params}
    return {"custom_id": custom_id, "params": body}


def create(http: httpx.Client, n: int = 3, **kwargs: Any) -> dict[str, Any]:
    response = http.post(BATCHES, json={"requests": [request(f"r-{i}") for i in range(n)]}, **kwargs)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_ended(http: httpx.Client, batch_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch = http.get(f"{BATCHES}/{batch_id}").json()
        if batch["processing_status"] == "ended":
            return dict(batch)
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def assert_error(response: httpx.Response, status: int, error_type: str, *needles: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["request-id"]
    for needle in needles:
        assert needle in body["error"]["message"]
    return str(body["error"]["message"])


# -- transport: keys, versions, request ids ---------------------------------------------------


@pytest.mark.smoke
@pytest.mark.parametrize("style", ["x-api-key", "bearer"])
@pytest.mark.parametrize("version", ["2026-10-21", "2023-06-01"])
def test_both_key_styles_and_both_versions_are_accepted(
    emulator: EmulatorHandle, emulator_api_key: str, style: str, version: str
) -> None:
    auth = {"x-api-key": emulator_api_key} if style == "x-api-key" else {"authorization": f"Bearer {emulator_api_key}"}
    response = httpx.get(emulator.url + BATCHES, headers={**auth, "anthropic-version": version})
    assert response.status_code == 200
    assert response.headers["request-id"].startswith("req_")
    assert response.json() == {"data": [], "has_more": False, "first_id": None, "last_id": None}


@pytest.mark.parametrize(
    "headers",
    [{"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}, {"authorization": "Basic abc"}, {}],
    ids=["wrong-x-api-key", "wrong-bearer", "not-bearer", "missing"],
)
def test_wrong_or_missing_key_is_401(emulator: EmulatorHandle, headers: dict[str, str]) -> None:
    response = httpx.get(emulator.url + BATCHES, headers={**headers, "anthropic-version": "2026-10-21"})
    message = assert_error(response, 401, "authentication_error")
    assert "wrong" not in message, "the key must never be echoed"


def test_any_key_is_accepted_when_no_key_is_configured(emulator_factory: Any) -> None:
    emu = emulator_factory(api_key=None)
    ok = httpx.get(emu.url + BATCHES, headers={"x-api-key": "whatever", "anthropic-version": "2026-10-21"})
    assert ok.status_code == 200
    missing = httpx.get(emu.url + BATCHES, headers={"anthropic-version": "2026-10-21"})
    assert_error(missing, 401, "authentication_error")


@pytest.mark.parametrize(
    ("version", "needle"), [(None, "anthropic-version header is required"), ("2024-01-01", "unknown")]
)
def test_missing_or_unknown_version_is_400(
    emulator: EmulatorHandle, emulator_api_key: str, version: str | None, needle: str
) -> None:
    headers = {"x-api-key": emulator_api_key}
    if version:
        headers["anthropic-version"] = version
    response = httpx.get(emulator.url + BATCHES, headers=headers)
    assert_error(response, 400, "invalid_request_error", needle, "2026-10-21", "2023-06-01")


def test_unknown_path_and_method_use_the_envelope(emulator_http: httpx.Client) -> None:
    assert_error(emulator_http.get("/v1/nothing"), 404, "not_found_error", "/v1/nothing")
    response = emulator_http.put(BATCHES)
    assert response.status_code == 405 and response.json()["type"] == "error"
    assert response.headers["request-id"].startswith("req_")


# -- create -----------------------------------------------------------------------------------


@pytest.mark.smoke
def test_create_returns_an_in_progress_batch(emulator_http: httpx.Client) -> None:
    batch = create(emulator_http, 4)
    assert batch["id"].startswith("msgbatch_")
    assert batch["type"] == "message_batch"
    assert batch["processing_status"] == "in_progress"
    assert batch["request_counts"] == {"processing": 4, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert batch["results_url"] is None and batch["ended_at"] is None
    assert batch["created_at"].endswith("Z") and len(batch["created_at"]) == len("2026-01-01T00:00:00.000000Z")
    created = time.strptime(batch["created_at"][:19], "%Y-%m-%dT%H:%M:%S")
    expires = time.strptime(batch["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")
    assert time.mktime(expires) - time.mktime(created) == 24 * 3600


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ({"requests": []}, ["1 to 100,000 requests", "got 0"]),
        ({}, ["requests"]),
        ({"requests": [request("a")], "extra": 1}, ["extra"]),
        ({"requests": [request("ok"), request("bad id")]}, ["requests[1]", "custom_id 'bad id' is invalid"]),
        ({"requests": [request("a"), request("b"), request("a")]}, ["requests[2] custom_id a", "more than once"]),
        ({"requests": [request("a", max_tokens=0)]}, ["requests[0] custom_id a", "params.max_tokens"]),
        ({"requests": [request("a", stream=True)]}, ["params.stream is not allowed"]),
        ({"requests": [{"custom_id": "a", "params": {"model": "m", "max_tokens": 1, "messages": []}}]}, ["messages"]),
        (
            {"requests": [request("a", temperature=0.2), request("b", top_k=3)]},
            ["custom_id a", "API version 2026-10-21", "2023-06-01", "(and 1 more problem)"],
        ),
    ],
)
def test_create_validation_names_the_index(
    emulator: EmulatorHandle, emulator_http: httpx.Client, body: Any, needles: list[str]
) -> None:
    assert_error(emulator_http.post(BATCHES, json=body), 400, "invalid_request_error", *needles)
    assert emulator.stats()["batches_created"] == 0


def test_version_rules_follow_the_header(emulator_http: httpx.Client) -> None:
    body = {"requests": [request("a", temperature=0.2, top_p=0.9, top_k=5)]}
    assert emulator_http.post(BATCHES, json=body, headers={"anthropic-version": "2023-06-01"}).status_code == 200
    out_of_range = {"requests": [request("a", temperature=1.5)]}
    response = emulator_http.post(BATCHES, json=out_of_range, headers={"anthropic-version": "2023-06-01"})
    assert_error(response, 400, "invalid_request_error", "params.temperature must be a number between 0 and 1")


def test_create_rejects_bad_json(emulator_http: httpx.Client) -> None:
    response = emulator_http.post(BATCHES, content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_request_error", "not valid JSON")


def test_count_and_body_size_limits(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.config.max_requests = 3
    assert_error(
        emulator_http.post(BATCHES, json={"requests": [request(f"r{i}") for i in range(4)]}),
        400,
        "invalid_request_error",
        "1 to 3 requests; got 4",
    )
    emulator.config.max_body_bytes = 2000
    big = {"requests": [request("a", text="x" * 3000)]}
    response = emulator_http.post(BATCHES, json=big)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert emulator.stats()["batches_created"] == 0


def test_large_create_is_accepted(emulator_http: httpx.Client) -> None:
    """A body over 1 MB (decoded in a worker thread, on the typed path) is accepted whole."""
    body = {"requests": [request(f"r-{i}", text="y" * 200) for i in range(6000)]}
    batch = emulator_http.post(BATCHES, json=body).json()
    assert batch["request_counts"]["processing"] == 6000


# -- retrieve, progress, results --------------------------------------------------------------


@pytest.mark.smoke
def test_batch_progresses_and_ends_with_results(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.config.processing_seconds = 0.6
    batch = create(emulator_http, 50)
    seen_partial = False
    while True:
        current = emulator_http.get(f"{BATCHES}/{batch['id']}").json()
        counts = current["request_counts"]
        assert sum(counts.values()) == 50
        if current["processing_status"] == "ended":
            break
        seen_partial |= 0 < counts["processing"] < 50
        assert current["results_url"] is None
        time.sleep(0.02)
    assert seen_partial, "counts should move from processing to succeeded over time"
    assert counts == {"processing": 0, "succeeded": 50, "errored": 0, "canceled": 0, "expired": 0}
    assert current["ended_at"] is not None
    assert current["results_url"] == f"{emulator.url}{BATCHES}/{batch['id']}/results"
    response = emulator_http.get(current["results_url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/binary"
    results = lines(response.content)
    assert sorted(r["custom_id"] for r in results) == sorted(f"r-{i}" for i in range(50))
    assert [r["custom_id"] for r in results] != [f"r-{i}" for i in range(50)], "results come in no particular order"
    message = results[0]["result"]["message"]
    assert results[0]["result"]["type"] == "succeeded"
    assert message["type"] == "message" and message["role"] == "assistant" and message["model"] == "claude-test-1"
    assert message["id"].startswith("msg_")
    assert message["content"][0]["text"].startswith("Emulated reply to: Summarise the news")
    assert set(message["usage"]) >= {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }
    assert message["usage"]["input_tokens"] > 0 and message["usage"]["output_tokens"] > 0


def test_results_url_follows_the_host_the_client_used(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch = create(emulator_http, 1)
    emulator.advance(1)
    port = emulator.url.rsplit(":", 1)[1]
    current = emulator_http.get(f"{BATCHES}/{batch['id']}", headers={"host": f"localhost:{port}"}).json()
    assert current["results_url"].startswith(f"http://localhost:{port}/v1/messages/batches/")


def test_results_before_the_end_and_of_unknown_batches(emulator_http: httpx.Client) -> None:
    batch = create(emulator_http, 1)
    assert_error(emulator_http.get(f"{BATCHES}/{batch['id']}/results"), 400, "invalid_request_error", "in_progress")
    assert_error(emulator_http.get(f"{BATCHES}/msgbatch_nope/results"), 404, "not_found_error", "msgbatch_nope")
    assert_error(emulator_http.get(f"{BATCHES}/msgbatch_nope"), 404, "not_found_error")


def test_outcomes_are_deterministic_per_seed_and_custom_id(
    emulator: EmulatorHandle, emulator_http: httpx.Client
) -> None:
    emulator.config.error_rate = 0.3

    def outcomes() -> dict[str, str]:
        emulator.reset_attempts()  # the same custom_ids again would be their second attempt
        batch = create(emulator_http, 200)
        emulator.advance(1)
        data = emulator_http.get(f"{BATCHES}/{batch['id']}/results").content
        return {r["custom_id"]: r["result"]["type"] for r in lines(data)}

    first, second = outcomes(), outcomes()
    assert first == second
    errored = [c for c, t in first.items() if t == "errored"]
    assert 30 < len(errored) < 90
    counts = emulator_http.get(BATCHES, params={"limit": 1}).json()["data"][0]["request_counts"]
    assert counts["errored"] == len(errored) and counts["succeeded"] == 200 - len(errored)


def test_markers_force_outcomes(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    texts = {
        "s": "ok [[emulator:succeeded]]",
        "e": "[[emulator:errored]] boom",
        "i": "[[emulator:errored:invalid_request_error]]",
        "c": "[[emulator:canceled]]",
        "x": "[[emulator:expired]]",
    }
    body = {"requests": [request(cid, text) for cid, text in texts.items()]}
    batch = emulator_http.post(BATCHES, json=body).json()
    emulator.advance(1)
    ended = emulator_http.get(f"{BATCHES}/{batch['id']}").json()
    assert ended["request_counts"] == {"processing": 0, "succeeded": 1, "errored": 2, "canceled": 1, "expired": 1}
    results = {r["custom_id"]: r["result"] for r in lines(emulator_http.get(ended["results_url"]).content)}
    assert results["s"]["type"] == "succeeded"
    assert results["e"]["error"] == {
        "type": "error",
        "error": {"type": "api_error", "message": results["e"]["error"]["error"]["message"]},
    }
    assert results["i"]["error"]["error"]["type"] == "invalid_request_error"
    assert results["c"] == {"type": "canceled"} and results["x"] == {"type": "expired"}


def test_result_size_option(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.config.result_bytes = 2000
    body = {"requests": [request(f"r{i}", max_tokens=4096) for i in range(20)]}
    batch = emulator_http.post(BATCHES, json=body).json()
    emulator.advance(1)
    data = emulator_http.get(f"{BATCHES}/{batch['id']}/results").content
    sizes = [len(line) for line in data.splitlines()]
    assert all(1900 <= size <= 2100 for size in sizes), sizes
    # max_tokens still caps the reply, as a real model would stop.
    small = emulator_http.post(BATCHES, json={"requests": [request("tiny", max_tokens=5)]}).json()
    emulator.advance(1)
    [line] = lines(emulator_http.get(f"{BATCHES}/{small['id']}/results").content)
    assert line["result"]["message"]["stop_reason"] == "max_tokens"
    assert line["result"]["message"]["usage"]["output_tokens"] == 5


def test_results_support_range_requests(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch = create(emulator_http, 30)
    emulator.advance(1)
    url = f"{BATCHES}/{batch['id']}/results"
    full = emulator_http.get(url)
    assert full.headers["accept-ranges"] == "bytes"
    size = len(full.content)
    part = emulator_http.get(url, headers={"range": "bytes=100-"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-{size - 1}/{size}"
    assert full.content[:100] + part.content == full.content
    middle = emulator_http.get(url, headers={"range": "bytes=10-19"})
    assert middle.content == full.content[10:20]
    suffix = emulator_http.get(url, headers={"range": "bytes=-7"})
    assert suffix.content == full.content[-7:]
    bad = emulator_http.get(url, headers={"range": f"bytes={size}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{size}"


# -- list -------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_list_pages_newest_first_both_ways(emulator_http: httpx.Client) -> None:
    ids = [create(emulator_http, 1)["id"] for _ in range(7)]
    newest_first = ids[::-1]
    page = emulator_http.get(BATCHES, params={"limit": 3}).json()
    assert [b["id"] for b in page["data"]] == newest_first[:3]
    assert page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (newest_first[0], newest_first[2])
    page2 = emulator_http.get(BATCHES, params={"limit": 3, "after_id": page["last_id"]}).json()
    assert [b["id"] for b in page2["data"]] == newest_first[3:6] and page2["has_more"] is True
    page3 = emulator_http.get(BATCHES, params={"limit": 3, "after_id": page2["last_id"]}).json()
    assert [b["id"] for b in page3["data"]] == newest_first[6:] and page3["has_more"] is False
    # before_id pages back towards newer batches, still newest first within the page.
    back = emulator_http.get(BATCHES, params={"limit": 2, "before_id": newest_first[5]}).json()
    assert [b["id"] for b in back["data"]] == newest_first[3:5] and back["has_more"] is True
    back2 = emulator_http.get(BATCHES, params={"limit": 5, "before_id": back["first_id"]}).json()
    assert [b["id"] for b in back2["data"]] == newest_first[:3] and back2["has_more"] is False
    everything = emulator_http.get(BATCHES, params={"limit": 1000}).json()
    assert [b["id"] for b in everything["data"]] == newest_first and everything["has_more"] is False
    assert len(emulator_http.get(BATCHES).json()["data"]) == 7  # default limit 20


@pytest.mark.parametrize("limit", ["0", "1001", "abc"])
def test_list_limit_bounds(emulator_http: httpx.Client, limit: str) -> None:
    assert_error(emulator_http.get(BATCHES, params={"limit": limit}), 400, "invalid_request_error", "limit", "1000")


def test_list_rejects_both_cursors(emulator_http: httpx.Client) -> None:
    response = emulator_http.get(BATCHES, params={"before_id": "a", "after_id": "b"})
    assert_error(response, 400, "invalid_request_error", "not both")


# -- cancel, delete, expiry, archive ----------------------------------------------------------


@pytest.mark.smoke
def test_cancel_goes_through_canceling_to_ended(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.config.processing_seconds = 30
    batch = create(emulator_http, 10)
    canceled = emulator_http.post(f"{BATCHES}/{batch['id']}/cancel").json()
    assert canceled["processing_status"] == "canceling"
    assert canceled["cancel_initiated_at"] is not None
    again = emulator_http.post(f"{BATCHES}/{batch['id']}/cancel")
    assert again.status_code == 200 and again.json()["cancel_initiated_at"] == canceled["cancel_initiated_at"]
    ended = wait_ended(emulator_http, batch["id"])
    counts = ended["request_counts"]
    assert counts["canceled"] + counts["succeeded"] == 10 and counts["canceled"] >= 9
    results = lines(emulator_http.get(ended["results_url"]).content)
    assert sum(r["result"]["type"] == "canceled" for r in results) == counts["canceled"]
    assert_error(emulator_http.post(f"{BATCHES}/{batch['id']}/cancel"), 400, "invalid_request_error", "already ended")
    assert_error(emulator_http.post(f"{BATCHES}/msgbatch_nope/cancel"), 404, "not_found_error")


def test_delete_only_once_ended(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch = create(emulator_http, 2)
    assert_error(emulator_http.delete(f"{BATCHES}/{batch['id']}"), 400, "invalid_request_error", "cancel it")
    emulator.advance(1)
    deleted = emulator_http.delete(f"{BATCHES}/{batch['id']}")
    assert deleted.json() == {"id": batch["id"], "type": "message_batch_deleted"}
    assert_error(emulator_http.get(f"{BATCHES}/{batch['id']}"), 404, "not_found_error")
    assert_error(emulator_http.delete(f"{BATCHES}/{batch['id']}"), 404, "not_found_error")
    assert emulator_http.get(BATCHES).json()["data"] == []


def test_expiry_turns_remaining_requests_expired(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.config.processing_seconds = 100
    emulator.config.expiry_seconds = 50
    batch = create(emulator_http, 40)
    emulator.advance(60)
    ended = emulator_http.get(f"{BATCHES}/{batch['id']}").json()
    assert ended["processing_status"] == "ended"
    counts = ended["request_counts"]
    assert counts["expired"] == 20 and counts["succeeded"] == 20
    results = lines(emulator_http.get(ended["results_url"]).content)
    assert sum(r["result"] == {"type": "expired"} for r in results) == 20


def test_results_are_archived_after_29_days(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch = create(emulator_http, 1)
    emulator.advance(29 * 86_400 + 1)
    current = emulator_http.get(f"{BATCHES}/{batch['id']}").json()
    assert current["archived_at"] is not None
    assert_error(emulator_http.get(f"{BATCHES}/{batch['id']}/results"), 404, "not_found_error", "archived")


# -- admin --------------------------------------------------------------------------------------


def test_stats_count_calls_per_endpoint(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    batch = create(emulator_http, 1)
    emulator_http.get(f"{BATCHES}/{batch['id']}")
    emulator_http.get(f"{BATCHES}/{batch['id']}")
    emulator_http.get(BATCHES)
    stats = emulator_http.get("/_emulator/stats").json()
    assert stats["calls"] == {"create": 1, "retrieve": 2, "list": 1}
    assert stats["batches_created"] == 1
    assert emulator_http.post("/_emulator/reset", json={}).json() == {"reset": True}
    assert emulator.stats()["calls"] == {} and emulator.stats()["batches_created"] == 0
    assert emulator_http.get(f"{BATCHES}/{batch['id']}").status_code == 404


def test_admin_clock_moves_time(emulator: EmulatorHandle, emulator_http: httpx.Client) -> None:
    emulator.config.processing_seconds = 1000
    batch = create(emulator_http, 1)
    assert emulator_http.post("/_emulator/clock", json={"advance": 2000}).status_code == 200
    assert emulator_http.get(f"{BATCHES}/{batch['id']}").json()["processing_status"] == "ended"
    assert emulator_http.post("/_emulator/clock", json={"advance": -1}).status_code == 400


def test_admin_endpoints_are_off_by_default(emulator_factory: Any) -> None:
    emu = emulator_factory(admin=False)
    assert httpx.get(emu.url + "/_emulator/stats").status_code == 404
    assert httpx.post(emu.url + "/_emulator/faults", json={"kind": "reset"}).status_code == 404

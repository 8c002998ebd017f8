"""The official ``anthropic`` SDK, unchanged, against the emulator: the test of faithfulness.

If the SDK's own parsing, pagination, error mapping and retries work here, the emulator
speaks the wire protocol the way the API does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle


def params(text: str = "Name three rivers", **extra: Any) -> dict[str, Any]:
    return {"model": "claude-test-1", "max_tokens": 256, "messages": [{"role": "user", "content": text}], **extra}


def requests(n: int, text: str = "Name three rivers") -> list[dict[str, Any]]:
    return [{"custom_id": f"q-{i}", "params": params(text)} for i in range(n)]


@pytest.fixture
def client(emulator: EmulatorHandle, emulator_api_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.url, api_key=emulator_api_key, max_retries=0) as sdk:
        yield sdk


@pytest.mark.smoke
def test_create_poll_results_delete(client: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    batch = client.messages.batches.create(requests=requests(12))
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 12
    deadline = time.monotonic() + 10
    while (batch := client.messages.batches.retrieve(batch.id)).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert batch.request_counts.succeeded == 12 and batch.ended_at is not None
    assert batch.results_url is not None and batch.results_url.startswith(emulator.url)
    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == sorted(f"q-{i}" for i in range(12))
    first = results[0].result
    assert first.type == "succeeded"
    assert first.message.model == "claude-test-1"
    assert first.message.content[0].type == "text"
    assert first.message.usage.output_tokens > 0
    deleted = client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_every_result_type_parses(client: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    texts = ["plain", "[[emulator:errored:invalid_request_error]]", "[[emulator:canceled]]", "[[emulator:expired]]"]
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"t{i}", "params": params(t)} for i, t in enumerate(texts)]
    )
    emulator.advance(1)
    by_id = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert [by_id[f"t{i}"].type for i in range(4)] == ["succeeded", "errored", "canceled", "expired"]
    errored = by_id["t1"]
    assert errored.type == "errored" and errored.error.error.type == "invalid_request_error"


async def test_async_client_flow(emulator: EmulatorHandle, emulator_api_key: str) -> None:
    async with anthropic.AsyncAnthropic(base_url=emulator.url, api_key=emulator_api_key) as sdk:
        batch = await sdk.messages.batches.create(requests=requests(3))
        emulator.advance(1)
        ended = await sdk.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        results = [r async for r in await sdk.messages.batches.results(batch.id)]
        assert len(results) == 3


def test_cancel(client: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    emulator.config.processing_seconds = 60
    batch = client.messages.batches.create(requests=requests(5))
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    emulator.advance(1)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 5
    assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"canceled"}


@pytest.mark.smoke
def test_list_pagination(client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=requests(1)).id for _ in range(7)]
    page = client.messages.batches.list(limit=3)
    assert [b.id for b in page.data] == ids[::-1][:3] and page.has_more
    assert [b.id for b in client.messages.batches.list(limit=3)] == ids[::-1], "auto-paging walks every page"
    newer = client.messages.batches.list(limit=2, before_id=ids[0])
    assert [b.id for b in newer.data] == [ids[2], ids[1]]
    walked = [b.id for b in newer]  # each page newest first, pages moving towards the newest
    assert walked == [ids[2], ids[1], ids[4], ids[3], ids[6], ids[5]]


def test_version_2023_06_01_accepts_sampling_parameters(emulator: EmulatorHandle, emulator_api_key: str) -> None:
    headers = {"anthropic-version": "2023-06-01"}
    with anthropic.Anthropic(
        base_url=emulator.url, api_key=emulator_api_key, max_retries=0, default_headers=headers
    ) as old:
        batch = old.messages.batches.create(requests=[{"custom_id": "t", "params": params(temperature=0.3)}])
        assert batch.processing_status == "in_progress"


def test_status_errors_map_to_the_sdk_classes(client: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    with pytest.raises(anthropic.BadRequestError, match="not accepted by API version 2026-10-21"):
        client.messages.batches.create(requests=[{"custom_id": "t", "params": params(temperature=0.3)}])
    with pytest.raises(anthropic.NotFoundError) as not_found:
        client.messages.batches.retrieve("msgbatch_missing")
    assert not_found.value.request_id is not None and not_found.value.request_id.startswith("req_")
    emulator.config.max_body_bytes = 500
    with pytest.raises(anthropic.RequestTooLargeError):
        client.messages.batches.create(requests=requests(1, text="z" * 1000))
    cases: list[tuple[int, type[anthropic.APIStatusError]]] = [
        (403, anthropic.PermissionDeniedError),
        (409, anthropic.ConflictError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ]
    for status, error_class in cases:
        emulator.add_fault("status", endpoint="list", status=status)
        with pytest.raises(error_class) as raised:
            client.messages.batches.list()
        assert raised.value.status_code == status


def test_wrong_key_is_an_authentication_error(emulator: EmulatorHandle) -> None:
    with (
        anthropic.Anthropic(base_url=emulator.url, api_key="sk-wrong", max_retries=0) as sdk,
        pytest.raises(anthropic.AuthenticationError),
    ):
        sdk.messages.batches.list()


def test_connection_faults_are_connection_errors(client: anthropic.Anthropic, emulator: EmulatorHandle) -> None:
    emulator.add_fault("reset", endpoint="list")
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.list()
    assert emulator.stats()["faults_fired"] == 1
    emulator.add_fault("latency", endpoint="list", seconds=1.0)
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.batches.list(timeout=0.2)
    assert emulator.stats()["faults_fired"] == 2
    emulator.add_fault("drop", endpoint="create")
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.create(requests=requests(1))
    assert emulator.stats()["faults_fired"] == 3
    assert emulator.stats()["batches_created"] == 1, "the dropped create did create a batch"


def _gap_between_two_lists(emulator: EmulatorHandle, api_key: str, retry_after: float | None) -> float:
    emulator.add_fault("status", endpoint="list", status=529, count=1, retry_after=retry_after)
    with anthropic.Anthropic(base_url=emulator.url, api_key=api_key, max_retries=1) as sdk:
        assert sdk.messages.batches.list().data == []
    stats = emulator.stats()
    assert stats["faults_fired"] == 1 and stats["calls"]["list"] == 2, "refused once, then retried once"
    first, second = emulator.call_times("list")
    return second - first


def test_sdk_retries_honour_retry_after(emulator: EmulatorHandle, emulator_api_key: str) -> None:
    """The SDK's own first backoff is at most 0.5 s; a retry-after of 2 s must stretch it to 2 s."""
    gap = _gap_between_two_lists(emulator, emulator_api_key, retry_after=2)
    assert gap >= 2.0, f"the retry came {gap:.3f} s after the 529 with retry-after: 2"


def test_sdk_retries_without_retry_after_use_their_own_backoff(emulator: EmulatorHandle, emulator_api_key: str) -> None:
    """The control of the test above: without the header the retry does not wait 2 s."""
    gap = _gap_between_two_lists(emulator, emulator_api_key, retry_after=None)
    assert gap < 2.0, f"without retry-after the SDK's own backoff (<= 0.5 s) applies; waited {gap:.3f} s"

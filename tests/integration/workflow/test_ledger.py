"""The create-once ledger (``workflow.ledger.CreateLedger``) driven through its own interface, against the emulator.

The API's side is the real one: the sync client over loopback, batches the emulator really
holds, a create whose answer is lost to a TCP reset (the emulator's ``reset`` fault: the
create is not carried out, the client cannot know that). The store is the dict-backed stand-in
for Airflow's task state store; a "later try" is a new ledger over the same store.

What a lost answer may adopt: one batch, created in the attempt's time window with the same
request count, not canceled. Several such batches are refused (naming each), none keeps the
attempt for one more look on the next try before sending again, and ``checks=0`` never adopts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pendulum
import pytest

from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.models import EncodedBody
from airflow_provider_anthropix.api.sync_client import SyncClient
from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.workflow.ledger import CreateFailed, CreateLedger, RecoverySettings
from tests.support.airflow import DictStateStore

ID_KEY = "batch_id"
ATTEMPT_KEY = "attempt"
PARAMS = {"model": "claude-haiku-4-5", "max_tokens": 16}


@pytest.fixture
def client(emulator: EmulatorHandle, emulator_api_key: str) -> Iterator[SyncClient]:
    with SyncClient(ClientConfig(api_key=emulator_api_key, base_url=emulator.url, max_retries=0)) as sync:
        yield sync


def body(n: int, tag: str = "mine") -> EncodedBody:
    requests = [
        {"custom_id": f"{tag}-{i}", "params": {**PARAMS, "messages": [{"role": "user", "content": f"{tag} {i}"}]}}
        for i in range(n)
    ]
    data = json.dumps({"requests": requests}).encode()
    return EncodedBody(chunks=lambda: [data], size=len(data), request_count=n)


def ledger(client: SyncClient, store: DictStateStore, *, checks: int = 2, **options: Any) -> CreateLedger:
    return CreateLedger(
        client,
        store,
        id_key=ID_KEY,
        attempt_key=ATTEMPT_KEY,
        settings=RecoverySettings(checks=checks, interval=0.0, clock_skew=60.0),
        sleep=lambda _: None,
        **options,
    )


def lose_the_next_create(emulator: EmulatorHandle) -> None:
    """The next create is reset before the emulator acts on it: no batch, and no answer."""
    emulator.add_fault("reset", endpoint="create", count=1)


@pytest.mark.parametrize("canceled", [True, False], ids=["canceled_twin", "live_twin"])
def test_a_canceled_twin_is_never_adopted_and_a_live_one_is(
    canceled: bool, client: SyncClient, emulator: EmulatorHandle
) -> None:
    twin = client.create_batch(body(3, "twin"))  # same request count, inside the attempt's window
    if canceled:
        assert client.cancel_batch(twin.id).cancel_initiated_at is not None
    lose_the_next_create(emulator)
    store = DictStateStore()
    if canceled:
        with pytest.raises(CreateFailed) as info:
            ledger(client, store).create(body(3))
        assert info.value.retryable  # looks again on the next try, then sends
        assert "no batch with 3 requests" in str(info.value)
        assert ID_KEY not in store.data
        assert store.data[ATTEMPT_KEY]["request_count"] == 3 and store.data[ATTEMPT_KEY]["looked"] is True
    else:
        created = ledger(client, store).create(body(3))
        assert (created.how, created.batch_id) == ("adopted", twin.id)
        assert store.data == {ID_KEY: twin.id}
    assert emulator.stats()["batches_created"] == 1  # the twin only: the lost create made nothing
    assert emulator.stats()["calls"]["create"] == 2


def test_a_twin_outside_the_time_window_is_not_adopted(client: SyncClient, emulator: EmulatorHandle) -> None:
    client.create_batch(body(3, "yesterday"))
    lose_the_next_create(emulator)
    store = DictStateStore()
    # This attempt starts 10 minutes after the twin was made: outside the 60 s of clock skew.
    later = ledger(client, store, now=lambda: pendulum.now("UTC").add(minutes=10))
    with pytest.raises(CreateFailed) as info:
        later.create(body(3))
    assert info.value.retryable and ID_KEY not in store.data


def test_two_matches_are_refused_naming_both_until_one_is_canceled(
    client: SyncClient, emulator: EmulatorHandle
) -> None:
    first = client.create_batch(body(4, "a"))
    second = client.create_batch(body(4, "b"))
    gone = client.create_batch(body(4, "c"))
    client.cancel_batch(gone.id)
    client.create_batch(body(5, "d"))  # another size: never a candidate
    lose_the_next_create(emulator)
    store = DictStateStore()
    with pytest.raises(CreateFailed) as info:
        ledger(client, store).create(body(4))
    message = str(info.value)
    assert not info.value.retryable  # guessing could adopt someone else's batch
    assert "2 batches with 4 requests" in message
    assert first.id in message and second.id in message and gone.id not in message
    assert "cancel the ones that are not wanted" in message
    assert ID_KEY not in store.data and store.data[ATTEMPT_KEY]["request_count"] == 4
    # What the message says to do: cancel the unwanted one, clear the task; the next try adopts the other.
    client.cancel_batch(second.id)
    found = ledger(client, store).resume()
    assert found is not None and (found.how, found.batch_id) == ("adopted", first.id)
    assert store.data == {ID_KEY: first.id}
    assert emulator.stats()["batches_created"] == 4


def test_a_lost_answer_with_no_match_fails_retryable_once_then_the_next_try_sends_again(
    client: SyncClient, emulator: EmulatorHandle
) -> None:
    lose_the_next_create(emulator)
    store = DictStateStore()
    with pytest.raises(CreateFailed) as info:
        ledger(client, store).create(body(3))
    assert info.value.retryable
    assert "the next try looks once more before sending it again" in str(info.value)
    attempt = store.data[ATTEMPT_KEY]
    assert attempt["request_count"] == 3 and attempt["looked"] is True and ID_KEY not in store.data
    assert emulator.stats()["batches_created"] == 0
    # The next try: one more look finds nothing, so the requests are sent again.
    created = ledger(client, store).resume_or_create(lambda: body(3))
    assert created.how == "created"
    assert store.data == {ID_KEY: created.batch_id}
    assert emulator.stats()["batches_created"] == 1
    assert emulator.stats()["calls"]["create"] == 2


def test_a_batch_that_shows_up_late_is_adopted_by_the_next_try_instead_of_sending_again(
    client: SyncClient, emulator: EmulatorHandle
) -> None:
    lose_the_next_create(emulator)
    store = DictStateStore()
    with pytest.raises(CreateFailed):
        ledger(client, store).create(body(3))
    late = client.create_batch(body(3, "late"))  # stands in for a large create that took a while to list
    created = ledger(client, store).resume_or_create(lambda: body(3))
    assert (created.how, created.batch_id) == ("adopted", late.id)
    assert emulator.stats()["batches_created"] == 1


def test_lost_response_checks_zero_never_adopts(client: SyncClient, emulator: EmulatorHandle) -> None:
    twin = client.create_batch(body(3, "twin"))  # would be adopted with checks > 0 (see above)
    lose_the_next_create(emulator)
    store = DictStateStore()
    with pytest.raises(CreateFailed) as info:
        ledger(client, store, checks=0).create(body(3))
    assert not info.value.retryable
    assert "adopting a batch is off (lost_response_checks=0)" in str(info.value)
    assert ID_KEY not in store.data
    # A later try with the same setting refuses too, instead of adopting or sending again.
    with pytest.raises(CreateFailed, match="lost_response_checks=0"):
        ledger(client, store, checks=0).resume()
    assert ID_KEY not in store.data
    assert emulator.stats()["batches_created"] == 1 and twin.id not in json.dumps(store.data)

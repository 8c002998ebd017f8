"""The create-once ledger on its own: a dict for the state store, an in-memory API, a hand-moved clock.

Each test is one rule of ``workflow/ledger.py``: the attempt is written before the send and the
id right after; a later try reuses what is recorded; a lost answer adopts the one batch that
can be it and refuses to guess between several; canceled batches and the caller's other
batches are never candidates; what did not reach the API is forgotten at once. The same rules
over HTTP, against the emulator, are in tests/integration/workflow/test_ledger.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_anthropix.api.errors import AnthropixConnectionError
from airflow_provider_anthropix.api.models import EncodedBody
from airflow_provider_anthropix.workflow.ledger import CreateFailed, CreateLedger, RecoverySettings
from tests.support.airflow import DictStateStore
from tests.support.fake_api import Clock, Crash, FakeBatches

ID_KEY = "batch_id"
ATTEMPT_KEY = "attempt"


def body(n: int) -> EncodedBody:
    requests = [{"custom_id": f"r-{i}", "params": {"max_tokens": 8}} for i in range(n)]
    data = json.dumps({"requests": requests}).encode()
    return EncodedBody(chunks=lambda: [data], size=len(data), request_count=n)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(clock: Clock) -> FakeBatches:
    return FakeBatches(now=clock)


@pytest.fixture
def store() -> DictStateStore:
    return DictStateStore()


def ledger(api: FakeBatches, store: DictStateStore, clock: Clock, **options: Any) -> CreateLedger:
    """One try's ledger; a later try is a new one over the same store."""
    return CreateLedger(
        api,
        store,
        id_key=ID_KEY,
        attempt_key=ATTEMPT_KEY,
        settings=RecoverySettings(checks=options.pop("checks", 2), interval=0.0, clock_skew=60.0),
        sleep=lambda _: None,
        now=clock,
        **options,
    )


def no_body() -> EncodedBody:
    raise AssertionError("the body was built: the ledger meant to send again")


@pytest.mark.smoke
def test_the_attempt_is_written_before_the_send_and_replaced_by_the_id(
    api: FakeBatches, store: DictStateStore, clock: Clock
) -> None:
    seen: list[dict[str, Any]] = []
    api.on_create = lambda sent: seen.append(dict(store.data))
    sent = body(3)
    created = ledger(api, store, clock).create(sent)
    attempt = {"started_at": clock().to_iso8601_string(), "request_count": 3, "body_bytes": sent.size}
    assert seen == [{ATTEMPT_KEY: attempt}]
    assert (created.how, created.batch_id) == ("created", api.made[0].id)
    assert store.data == {ID_KEY: created.batch_id}


def test_a_later_try_reuses_the_recorded_batch_without_a_call(
    api: FakeBatches, store: DictStateStore, clock: Clock
) -> None:
    first = ledger(api, store, clock).resume_or_create(lambda: body(3))
    again = ledger(api, store, clock).resume_or_create(no_body)
    assert (again.how, again.batch_id) == ("reused", first.batch_id)
    assert len(api.sent) == 1 and api.listings == 0


@pytest.mark.parametrize("how", ["lose", "crash"], ids=["answer_lost", "worker_died"])
def test_the_batch_of_a_lost_answer_is_adopted_not_sent_again(
    how: str, api: FakeBatches, store: DictStateStore, clock: Clock
) -> None:
    api.next_creates = [how]
    if how == "lose":
        created = ledger(api, store, clock).create(body(3))
    else:
        with pytest.raises(Crash):
            ledger(api, store, clock).create(body(3))
        assert store.data[ATTEMPT_KEY]["request_count"] == 3 and ID_KEY not in store.data
        clock.advance(minutes=5)  # the retry comes later
        created = ledger(api, store, clock).resume_or_create(no_body)
    [made] = api.made
    assert (created.how, created.batch_id) == ("adopted", made.id)
    assert store.data == {ID_KEY: made.id}
    assert len(api.sent) == 1


def test_two_candidates_are_refused_naming_both(api: FakeBatches, store: DictStateStore, clock: Clock) -> None:
    twin = api.add(3, seconds=-5)
    api.next_creates = ["lose"]
    with pytest.raises(CreateFailed) as info:
        ledger(api, store, clock).create(body(3))
    assert not info.value.retryable
    assert twin.id in str(info.value) and api.made[0].id in str(info.value)
    assert ID_KEY not in store.data and store.data[ATTEMPT_KEY]["request_count"] == 3


def test_a_canceled_twin_is_never_a_candidate(api: FakeBatches, store: DictStateStore, clock: Clock) -> None:
    api.add(3, seconds=-5, canceled=True)
    api.next_creates = ["lose"]
    created = ledger(api, store, clock).create(body(3))
    assert (created.how, created.batch_id) == ("adopted", api.made[0].id)


def test_a_canceled_twin_alone_is_never_adopted_and_the_requests_are_sent_again(
    api: FakeBatches, store: DictStateStore, clock: Clock
) -> None:
    twin = api.add(3, seconds=-5, canceled=True)
    api.next_creates = ["reset"]  # nothing made
    with pytest.raises(CreateFailed) as info:
        ledger(api, store, clock).create(body(3))
    assert info.value.retryable and store.data[ATTEMPT_KEY]["looked"] is True
    created = ledger(api, store, clock).resume_or_create(lambda: body(3))
    assert created.how == "created" and created.batch_id != twin.id
    assert len(api.sent) == 2


def test_the_callers_other_batches_are_never_adopted(api: FakeBatches, store: DictStateStore, clock: Clock) -> None:
    """A job's shards of equal size: shard 1's batch is not shard 2's lost one."""
    sibling = api.add(3, seconds=-5)
    api.next_creates = ["lose"]
    created = ledger(api, store, clock, known_ids=lambda: {sibling.id}).create(body(3))
    assert (created.how, created.batch_id) == ("adopted", api.made[0].id)


def test_a_batch_made_after_the_send_could_have_arrived_is_not_adopted(
    api: FakeBatches, store: DictStateStore, clock: Clock
) -> None:
    """An attempt found days later (a cleared task) must not adopt a later night's batch of the same size."""
    api.next_creates = ["reset"]  # nothing made; the first round of looks finds nothing
    with pytest.raises(CreateFailed):
        ledger(api, store, clock).create(body(3))
    clock.advance(days=2)
    later = api.add(3, seconds=-30)  # same size, created long after the attempt's send
    created = ledger(api, store, clock).resume_or_create(lambda: body(3))
    assert created.how == "created" and created.batch_id != later.id


@pytest.mark.parametrize(
    ("how", "retryable", "declined"),
    [("decline", True, True), ("unsent", True, False), ("refuse", False, False)],
)
def test_a_create_the_api_did_not_act_on_forgets_its_attempt_without_looking(
    how: str, retryable: bool, declined: bool, api: FakeBatches, store: DictStateStore, clock: Clock
) -> None:
    api.add(3, seconds=-5)  # a twin that a look would find
    api.next_creates = [how]
    with pytest.raises(CreateFailed) as info:
        ledger(api, store, clock).create(body(3))
    assert (info.value.retryable, info.value.declined) == (retryable, declined)
    assert store.data == {} and api.listings == 0 and api.made == []


def test_a_success_status_without_a_batch_is_never_sent_again_automatically(
    api: FakeBatches, store: DictStateStore, clock: Clock
) -> None:
    api.next_creates = ["garble"]
    with pytest.raises(CreateFailed) as first:
        ledger(api, store, clock).create(body(3))
    assert first.value.retryable and store.data[ATTEMPT_KEY]["answered"] is True
    with pytest.raises(CreateFailed, match="not sent again automatically") as second:
        ledger(api, store, clock).resume_or_create(no_body)
    assert not second.value.retryable
    assert len(api.sent) == 1 and ID_KEY not in store.data


def test_a_listing_that_fails_keeps_the_attempt_for_the_next_try(
    api: FakeBatches, store: DictStateStore, clock: Clock
) -> None:
    api.next_creates = ["lose"]
    api.list_failures = [AnthropixConnectionError("listing reset")]
    with pytest.raises(CreateFailed, match="listing batches to find it failed") as info:
        ledger(api, store, clock).create(body(3))
    assert info.value.retryable and ID_KEY not in store.data
    created = ledger(api, store, clock).resume_or_create(no_body)
    assert (created.how, created.batch_id) == ("adopted", api.made[0].id)


def test_without_a_durable_store_one_empty_round_of_looks_sends_again(
    api: FakeBatches, store: DictStateStore, clock: Clock
) -> None:
    api.next_creates = ["reset"]
    with pytest.raises(CreateFailed, match="most likely never reached the API") as info:
        ledger(api, store, clock, durable=False).create(body(3))
    assert info.value.retryable and store.data == {}
    assert api.listings == 2  # checks=2 looks, then nothing left to remember

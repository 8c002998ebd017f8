"""The shared retry policy: what retries, how long it waits, and the create rule."""

from __future__ import annotations

import pytest

from airflow_provider_anthropix.api.errors import (
    AnthropixAPIError,
    AnthropixConnectionError,
    AnthropixTimeoutError,
    error_from_response,
)
from airflow_provider_anthropix.api.retry import RetryPolicy, parse_retry_after


def policy(**kwargs: float) -> RetryPolicy:
    return RetryPolicy(rng=lambda: 1.0, **kwargs)  # type: ignore[arg-type]


def api_error(
    status: int, headers: dict[str, str] | None = None, retry_after: float | None = None
) -> AnthropixAPIError:
    return error_from_response(status, headers or {}, b"", retry_after=retry_after)


@pytest.mark.smoke
@pytest.mark.parametrize("status", [408, 409, 429, 500, 501, 502, 503, 504, 520, 522, 524, 529])
def test_transient_statuses_retry_for_idempotent_calls(status: int) -> None:
    assert policy().next_delay(api_error(status), attempt=0, waited=0, idempotent=True) is not None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_client_errors_never_retry(status: int) -> None:
    assert policy().next_delay(api_error(status), attempt=0, waited=0, idempotent=True) is None


def test_backoff_doubles_up_to_the_cap() -> None:
    p = policy(max_retries=10, initial_delay=0.5, max_delay=8.0, max_total_wait=1000)
    delays = [p.next_delay(api_error(500), attempt=n, waited=0, idempotent=True) for n in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_full_jitter_stays_within_the_ceiling() -> None:
    p = RetryPolicy(max_retries=5, rng=lambda: 0.25)
    assert p.backoff(2) == pytest.approx(0.5)


def test_attempts_are_capped() -> None:
    p = policy(max_retries=2)
    assert p.next_delay(api_error(500), attempt=1, waited=0, idempotent=True) is not None
    assert p.next_delay(api_error(500), attempt=2, waited=0, idempotent=True) is None


def test_total_wait_is_capped() -> None:
    p = policy(max_retries=10, max_total_wait=5.0)
    assert p.next_delay(api_error(500), attempt=3, waited=0.5, idempotent=True) == 4.0
    assert p.next_delay(api_error(500), attempt=3, waited=1.5, idempotent=True) is None


def test_server_hint_wins_over_backoff() -> None:
    delay = policy().next_delay(api_error(429, retry_after=7.0), attempt=0, waited=0, idempotent=True)
    assert delay == 7.0


def test_hint_over_a_minute_is_ignored() -> None:
    delay = policy().next_delay(api_error(429, retry_after=600.0), attempt=0, waited=0, idempotent=True)
    assert delay == 0.5


def test_x_should_retry_overrides_status() -> None:
    p = policy()
    assert p.next_delay(api_error(400, {"x-should-retry": "true"}), attempt=0, waited=0, idempotent=True) == 0.5
    assert p.next_delay(api_error(500, {"x-should-retry": "false"}), attempt=0, waited=0, idempotent=True) is None


@pytest.mark.smoke
def test_create_not_retried_after_it_may_have_been_sent() -> None:
    p = policy()
    for error in (AnthropixConnectionError("reset"), AnthropixTimeoutError("read timeout"), api_error(500)):
        assert p.next_delay(error, attempt=0, waited=0, idempotent=False) is None


def test_create_retried_when_server_says_it_did_not_act() -> None:
    p = policy()
    assert p.next_delay(api_error(429), attempt=0, waited=0, idempotent=False) is not None
    assert p.next_delay(api_error(529), attempt=0, waited=0, idempotent=False) is not None
    assert p.next_delay(api_error(500, {"x-should-retry": "true"}), attempt=0, waited=0, idempotent=False) is not None
    never_sent = AnthropixConnectionError("refused", maybe_sent=False)
    assert p.next_delay(never_sent, attempt=0, waited=0, idempotent=False) is not None


def test_connection_errors_retry_for_idempotent_calls() -> None:
    assert policy().next_delay(AnthropixConnectionError("reset"), attempt=0, waited=0, idempotent=True) == 0.5


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "4"}, 4.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "Wed, 25 Nov 2026 08:00:10 GMT"}, 10.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
        ({"retry-after-ms": "x", "retry-after": "3"}, 3.0),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1795593600.0  # 2026-11-25T08:00:00Z
    assert parse_retry_after(headers, now=now) == expected


def test_the_retry_loop_counts_attempts_and_waits_and_gives_up_with_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from airflow_provider_anthropix.api.retry import RetryLoop

    loop = RetryLoop(policy(max_retries=2), "retrieve", idempotent=True)
    error = api_error(503)
    with caplog.at_level("WARNING", logger="airflow_provider_anthropix"):
        assert loop.next_delay(error) == 0.5
        assert loop.next_delay(error) == 1.0
    assert (loop.attempt, loop.waited) == (2, 1.5)
    assert [r.getMessage() for r in caplog.records] == [
        "retrieve failed (HTTP 503 api_error: service unavailable); retry 1 of 2 in 0.5 s",
        "retrieve failed (HTTP 503 api_error: service unavailable); retry 2 of 2 in 1.0 s",
    ]
    with pytest.raises(AnthropixAPIError) as info:
        loop.next_delay(error)
    assert info.value is error
    create = RetryLoop(policy(), "create", idempotent=False)
    with pytest.raises(AnthropixConnectionError):
        create.next_delay(AnthropixConnectionError("broke", maybe_sent=True))


def test_a_malformed_answer_is_neither_retried_nor_transient() -> None:
    from airflow_provider_anthropix.api.errors import AnthropixResponseError
    from airflow_provider_anthropix.api.retry import is_transient

    error = AnthropixResponseError("retrieve: answered HTTP 200 with a malformed answer")
    assert policy().next_delay(error, attempt=0, waited=0, idempotent=True) is None
    assert not is_transient(error)

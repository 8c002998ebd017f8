"""The triggers' poll loop without a server: jittered waits, what is waited out, and a capped retry-after."""

from __future__ import annotations

import random

from airflow_provider_anthropix.api import (
    AnthropixConnectionError,
    AuthenticationError,
    NotFoundError,
    OverloadedError,
    RateLimitError,
)
from airflow_provider_anthropix.api.errors import error_from_response
from airflow_provider_anthropix.api.retry import is_transient
from airflow_provider_anthropix.triggers.polling import jittered, next_poll_wait


def test_jitter_stays_in_its_band() -> None:
    rng = random.Random(1)
    draws = [jittered(10.0, 0.1, rng) for _ in range(500)]
    assert min(draws) >= 9.0
    assert max(draws) <= 11.0
    assert max(draws) - min(draws) > 1.0  # actually spread
    assert jittered(10.0, 0.0) == 10.0


def test_transient_errors_are_waited_out_and_the_rest_are_not() -> None:
    assert is_transient(OverloadedError("o", status=529))
    assert is_transient(RateLimitError("r", status=429))
    assert is_transient(AnthropixConnectionError("reset"))
    assert not is_transient(AuthenticationError("k", status=401))
    assert not is_transient(NotFoundError("n", status=404))
    for edge_status in (501, 520, 522, 524):  # a CDN in front of the API: still worth waiting out
        assert is_transient(error_from_response(edge_status, {}, b""))
    assert not is_transient(error_from_response(503, {"x-should-retry": "false"}, b""))


def test_a_huge_retry_after_is_capped() -> None:
    """A proxy's ``retry-after: 86400`` must not put the wait to sleep past its deadline."""
    assert next_poll_wait(5.0, 0.1, 1, 86_400.0) == 600.0
    assert next_poll_wait(5.0, 0.1, 1, 7.0) == 7.0
    assert 4.5 <= next_poll_wait(5.0, 0.1, 0, 86_400.0) <= 5.5  # no failure: the interval, hint or not

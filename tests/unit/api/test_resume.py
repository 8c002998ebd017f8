"""Resuming a results download: offsets, the same-bytes check, and the end of a known-length body."""

from __future__ import annotations

import pytest

from airflow_provider_anthropix.api.errors import ResultsChangedError
from airflow_provider_anthropix.api.resume import ResumeState
from airflow_provider_anthropix.api.retry import RetryPolicy


def state_after(received: int, *, etag: str | None = '"v1"', length: int = 1000) -> ResumeState:
    state = ResumeState(RetryPolicy())
    state.start(200, {"etag": etag, "content-length": str(length)} if etag else {"content-length": str(length)})
    state.received = received
    return state


@pytest.mark.smoke
def test_first_request_asks_for_identity_encoding_only() -> None:
    assert ResumeState(RetryPolicy()).request_headers() == {"accept-encoding": "identity"}


def test_resume_asks_for_the_rest_if_unchanged() -> None:
    assert state_after(400).request_headers() == {
        "accept-encoding": "identity",
        "range": "bytes=400-",
        "if-range": '"v1"',
    }


def test_206_from_the_offset_keeps_everything_and_200_skips_what_we_have() -> None:
    assert state_after(400).start(206, {"etag": '"v1"', "content-range": "bytes 400-999/1000"}).remaining == 0
    assert state_after(400).start(200, {"etag": '"v1"', "content-length": "1000"}).remaining == 400


@pytest.mark.smoke
def test_different_bytes_on_resume_are_refused() -> None:
    with pytest.raises(ResultsChangedError, match="start over"):
        state_after(400).start(200, {"etag": '"v2"', "content-length": "1000"})
    with pytest.raises(ResultsChangedError):
        state_after(400, etag=None).start(200, {"content-length": "999"})


def test_a_break_after_the_last_byte_is_complete() -> None:
    assert not state_after(999).complete
    assert state_after(1000).complete
    unknown = ResumeState(RetryPolicy())
    unknown.start(200, {})
    unknown.received = 10**9
    assert not unknown.complete

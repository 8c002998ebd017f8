"""Call building: paths, list bounds, and the results-host check that keeps the key home."""

from __future__ import annotations

import json

import pytest

from airflow_provider_anthropix.api import calls
from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.errors import AnthropixTimeoutError, ResultsHostError
from airflow_provider_anthropix.api.lines import ResultLines, lines_of
from airflow_provider_anthropix.api.models import MessageBatch, RequestCounts

CONFIG = ClientConfig(api_key="sk-test", base_url="http://127.0.0.1:8787")


def batch(results_url: str | None, status: str = "ended") -> MessageBatch:
    return MessageBatch(
        id="msgbatch_1", processing_status=status, request_counts=RequestCounts(), results_url=results_url
    )


@pytest.mark.smoke
def test_results_url_on_the_api_host_is_used() -> None:
    url = "http://127.0.0.1:8787/v1/messages/batches/msgbatch_1/results"
    assert calls.results_url_for(CONFIG, batch(url)) == url
    assert calls.results_url_for(CONFIG, url) == url
    assert calls.results_url_for(CONFIG, "msgbatch_1") == url


@pytest.mark.smoke
@pytest.mark.parametrize(
    "forged",
    [
        "http://evil.example.com/v1/messages/batches/msgbatch_1/results",
        "http://127.0.0.1:9999/v1/messages/batches/msgbatch_1/results",
        "https://127.0.0.1:8787/v1/messages/batches/msgbatch_1/results",
    ],
)
def test_results_url_on_another_host_is_refused(forged: str) -> None:
    with pytest.raises(ResultsHostError, match="refusing to send the API key"):
        calls.results_url_for(CONFIG, batch(forged))


def test_results_of_unfinished_batch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="in_progress"):
        calls.results_url_for(CONFIG, batch(None, status="in_progress"))


def test_batch_id_is_escaped_in_paths() -> None:
    assert calls.get_call(CONFIG, "a/../b").url.endswith("/v1/messages/batches/a%2F..%2Fb")


def test_list_limit_bounds() -> None:
    assert calls.list_call(CONFIG, 1000).params == {"limit": 1000}
    with pytest.raises(ValueError, match="between 1 and 1000"):
        calls.list_call(CONFIG, 0)


def test_create_is_not_idempotent_and_body_is_compact_json() -> None:
    call = calls.create_call(CONFIG, [{"custom_id": "a", "params": {"model": "m"}}])
    assert call.idempotent is False
    assert call.json_body is not None
    assert json.loads(call.json_body) == {"requests": [{"custom_id": "a", "params": {"model": "m"}}]}


def test_result_lines_across_chunks() -> None:
    lines = ResultLines()
    out = lines.feed(b'{"a":1}\n{"b"') + lines.feed(b":2}\n\n{") + lines.feed(b'"c":3}') + lines.finish()
    assert out == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert lines.feed(b"\n  \n") == [] and lines.finish() == []  # blank lines are not results


def test_lines_of_refuses_a_block_whose_lines_do_not_match_its_results() -> None:
    """Two values on one line decode as two results: a blank line must not make the counts agree."""
    block = b'{"custom_id":"a"} {"custom_id":"b"}\n\n{"custom_id":"c"}\n'
    with pytest.raises(ValueError, match="3 decoded results has 2 lines"):
        lines_of(block, 3)
    assert lines_of(b"a\n \n\nb\n", 2) == [b"a", b"b"]


def _wrapped(error: BaseException, outer: BaseException) -> BaseException:
    """``outer`` raised from ``error``, as libraries wrap each other's errors."""
    try:
        try:
            raise error
        except BaseException as inner:
            raise outer from inner
    except BaseException as raised:
        return raised


def test_never_sent_is_decided_by_type_along_the_chain_for_both_libraries() -> None:
    """One rule for both clients: the library's connect-time error types, wherever they sit in the chain."""
    import httpx
    from requests import exceptions as rex
    from urllib3 import exceptions as urllib3_exceptions
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    from airflow_provider_anthropix.api import async_client, sync_client

    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    via_urllib3 = rex.ConnectionError(MaxRetryError(None, "/", reason=refused))  # type: ignore[arg-type]
    sent_cases: list[tuple[calls.TransportErrors, BaseException, bool]] = [
        (sync_client._TRANSPORT, via_urllib3, False),
        (sync_client._TRANSPORT, rex.ConnectTimeout("connect timed out"), False),
        (sync_client._TRANSPORT, rex.ConnectionError("Connection aborted: RemoteDisconnected"), True),
        (sync_client._TRANSPORT, rex.ReadTimeout("read timed out"), True),
        (sync_client._TRANSPORT, _wrapped(urllib3_exceptions.ConnectTimeoutError(), rex.ConnectionError()), False),
        (async_client._TRANSPORT, httpx.ConnectError("refused"), False),
        (async_client._TRANSPORT, httpx.PoolTimeout("no slot"), False),
        (async_client._TRANSPORT, httpx.ReadError("reset"), True),
        (async_client._TRANSPORT, _wrapped(httpx.ConnectError("refused"), httpx.ReadError("after")), False),
    ]
    for transport, exc, maybe_sent in sent_cases:
        error = transport.translate(exc, "retrieve", CONFIG, CONFIG.redactor())
        assert error.maybe_sent is maybe_sent, (type(exc).__name__, str(error))
    timed_out = sync_client._TRANSPORT.translate(rex.ReadTimeout(), "list", CONFIG, CONFIG.redactor())
    assert isinstance(timed_out, AnthropixTimeoutError)


def test_a_request_that_cannot_be_encoded_was_never_sent() -> None:
    from airflow_provider_anthropix.api import sync_client

    exc = UnicodeEncodeError("latin-1", "\u2603", 0, 1, "ordinal not in range")
    error = sync_client._TRANSPORT.translate(exc, "create", CONFIG, CONFIG.redactor())
    assert not error.maybe_sent
    assert "cannot be encoded for HTTP (UnicodeEncodeError); nothing was sent" in str(error)

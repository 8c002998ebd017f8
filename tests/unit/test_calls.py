"""Call building: paths, list bounds, and the results-host check that keeps the key home."""

from __future__ import annotations

import json

import pytest

from airflow_provider_anthropix.api import calls
from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.errors import ResultsHostError
from airflow_provider_anthropix.api.lines import LineSplitter
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


def test_line_splitter_across_chunks() -> None:
    splitter = LineSplitter()
    out = splitter.feed(b'{"a":1}\n{"b"') + splitter.feed(b":2}\n\n{") + splitter.feed(b'"c":3}') + splitter.finish()
    assert out == [b'{"a":1}', b'{"b":2}', b'{"c":3}']

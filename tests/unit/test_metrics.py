"""The metrics module: one list of names (equal to docs/metrics.md), sent through Airflow's Stats on 3.2 and 3.3."""

from __future__ import annotations

import re
from typing import Any

import pytest

from airflow_provider_anthropix import metrics
from airflow_provider_anthropix.metrics import METRICS
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from tests.support.paths import REPO
from tests.support.statsd import statsd_server

pytestmark = pytest.mark.smoke


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The table of docs/metrics.md: name -> (kind, tags)."""
    rows = re.findall(
        r"^\| `(anthropix\.[^`]+)` \| (\w+) \| ([^|]*) \|", (REPO / "docs" / "metrics.md").read_text(), re.M
    )
    return {name: (kind, tuple(re.findall(r"`(\w+)`", tags))) for name, kind, tags in rows}


def test_the_docs_table_is_the_list_of_metrics() -> None:
    assert documented() == {name: (kind, tags) for name, (kind, tags, _) in METRICS.items()}
    assert all(name.startswith("anthropix.") for name in METRICS)
    assert {kind for kind, _, _ in METRICS.values()} <= {"counter", "gauge", "timer"}


def test_an_undocumented_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of the provider's metrics"):
        metrics.incr("anthropix.made_up")


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, str]]] = []
        self.fail = fail

    def __getattr__(self, method: str) -> Any:
        def send(name: str, value: Any, *, tags: dict[str, str]) -> None:
            if self.fail:
                raise OSError("backend down")
            self.calls.append((method, name, value, tags))

        return send


def test_a_failing_backend_never_fails_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_backend", Recorder(fail=True))
    metrics.incr("anthropix.batches.created", tags={"conn_id": "c"})
    metrics.gauge("anthropix.cost.estimate_error", 0.1)
    metrics.timing("anthropix.export.duration", 1.5)


def test_an_export_sends_its_manifest_figures_with_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(metrics, "_backend", recorder)
    op = FetchBatchResultsOperator(task_id="f", batch_id="msgbatch_1", destination="/tmp/x", anthropix_conn_id="llm")
    manifest = {
        "batch_id": "msgbatch_1",
        "counts": {"succeeded": 3, "errored": 1, "canceled": 0, "expired": 0},
        "tokens": {"input": 10, "output": 20, "cache_creation_input": 0, "cache_read_input": 0},
        "actual": {"cost_usd": 0.5},
        "estimate": {"expected_cost_usd": 0.6, "worst_case_cost_usd": 0.9, "most_expensive": [{"custom_id": "a"}]},
        "files": [{"name": "results.jsonl", "size": 1234}],
        "duration_seconds": 2.5,
        "lines": 4,
    }
    op._observe_export(manifest, "file:///tmp/x/_manifest.json")
    tags = {"conn_id": "llm", "operator": "FetchBatchResultsOperator"}
    sent = {(method, name): (value, t) for method, name, value, t in recorder.calls}
    assert sent[("incr", "anthropix.requests.succeeded")] == (3, tags)
    assert sent[("incr", "anthropix.requests.errored")] == (1, tags)
    assert ("incr", "anthropix.requests.canceled") not in sent  # a zero count sends nothing
    assert sent[("incr", "anthropix.cost.actual_usd")] == (0.5, tags)
    assert sent[("gauge", "anthropix.cost.estimate_error")] == (0.2, tags)
    assert sent[("incr", "anthropix.export.bytes")] == (1234, tags)
    duration, _ = sent[("timing", "anthropix.export.duration")]
    assert duration.total_seconds() == 2.5
    assert op.observed.facet_fields()["estimateError"] == 0.2


def test_each_kind_reaches_a_statsd_server_through_airflows_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Airflow 3.2 and 3.3 (``make test-smoke-3.2``) both send, tags included (InfluxDB form)."""
    with statsd_server(monkeypatch) as server:
        metrics.incr("anthropix.batches.created", tags={"conn_id": "llm"})
        metrics.incr("anthropix.cost.actual_usd", 0.25, tags={"conn_id": "llm", "operator": "Op"})
        metrics.gauge("anthropix.cost.estimate_error", 0.125, tags={"conn_id": "llm", "operator": "Op"})
        metrics.timing("anthropix.export.duration", 0.5, tags={"conn_id": "llm", "operator": "Op"})
        got = server.metrics()
    assert got["anthropix.batches.created"] == [("1|c", {"conn_id": "llm"})]
    assert got["anthropix.cost.actual_usd"] == [("0.25|c", {"conn_id": "llm", "operator": "Op"})]
    assert got["anthropix.cost.estimate_error"] == [("0.125|g", {"conn_id": "llm", "operator": "Op"})]
    [(duration, _)] = got["anthropix.export.duration"]
    assert float(duration.removesuffix("|ms")) == pytest.approx(500.0)
    # Off again: the no-op backend, nothing sent and nothing raised.
    metrics.incr("anthropix.batches.created", tags={"conn_id": "llm"})

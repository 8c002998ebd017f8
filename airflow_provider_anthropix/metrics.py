"""The provider's metrics, sent through Airflow's own ``Stats`` (StatsD, Datadog or OpenTelemetry).

Every name starts with ``anthropix.`` and is listed, with its kind and tags, in :data:`METRICS`
(docs/metrics.md is the same table, and a test keeps the two equal). Only the Airflow-facing
layers (operators, triggers, the hook) call this module: ``api/``, ``workflow/`` and ``cost/``
hand their facts up instead (a callback, a return value, the manifest).

Outside Airflow (the CLI, a plain script, a test without ``[metrics]``) ``Stats`` is Airflow's
no-op logger, and where Airflow cannot be imported at all nothing is sent. A metric never
fails a task: a backend error is logged once and swallowed.

``Stats`` is imported from ``airflow.sdk.observability.stats`` (Airflow 3.2 and 3.3 alike) on
the first metric, never when a DAG file is parsed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "anthropix."

#: name -> (kind, tags, meaning). The one list of the provider's metrics (docs/metrics.md shows it).
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "anthropix.batches.created": (
        "counter",
        ("conn_id",),
        "batches the API created (every create call that returned a batch)",
    ),
    "anthropix.requests.submitted": ("counter", ("conn_id",), "requests in those batches"),
    "anthropix.batches.adopted": (
        "counter",
        ("conn_id", "operator"),
        "batches adopted after a create whose answer was lost (the create-once ledger found them)",
    ),
    "anthropix.batches.canceled": ("counter", ("conn_id",), "cancels the API accepted"),
    "anthropix.requests.succeeded": ("counter", ("conn_id", "operator"), "exported requests that succeeded"),
    "anthropix.requests.errored": ("counter", ("conn_id", "operator"), "exported requests that errored"),
    "anthropix.requests.canceled": ("counter", ("conn_id", "operator"), "exported requests that were canceled"),
    "anthropix.requests.expired": ("counter", ("conn_id", "operator"), "exported requests that expired"),
    "anthropix.requests.invalid_output": (
        "counter",
        ("conn_id", "operator"),
        "BatchTableOperator: succeeded answers that break output_schema",
    ),
    "anthropix.cost.estimated_usd": (
        "counter",
        ("conn_id", "operator"),
        "expected cost in USD (batch price) estimated before sending, per create or job",
    ),
    "anthropix.cost.actual_usd": (
        "counter",
        ("conn_id", "operator"),
        "cost in USD of the usage the exported results report (batch price)",
    ),
    "anthropix.cost.estimate_error": (
        "gauge",
        ("conn_id", "operator"),
        "(estimated - actual) / actual cost of the last export whose estimate is known; positive: estimated high",
    ),
    "anthropix.export.bytes": ("counter", ("conn_id", "operator"), "bytes of the objects an export published"),
    "anthropix.export.duration": ("timer", ("conn_id", "operator"), "how long an export took to publish"),
    "anthropix.job.retry_rounds": ("counter", ("conn_id", "operator"), "retry rounds a batch job sent"),
    "anthropix.poll.failures": (
        "counter",
        ("conn_id", "trigger"),
        "failed status polls in the triggerer (each transient failure the trigger tolerated or gave up on)",
    ),
}

_backend: Any = None
_warned = False


def _stats() -> Any:
    """Airflow's ``Stats`` (SDK path, 3.2+), or None where Airflow is not importable."""
    global _backend
    if _backend is None:
        try:
            from airflow.sdk.observability.stats import Stats
        except ImportError:  # pragma: no cover - Airflow is a dependency; a bare install of the API layer is not
            _backend = False
        else:
            _backend = Stats
    return _backend or None


def _send(method: str, name: str, value: Any, tags: Mapping[str, Any] | None) -> None:
    global _warned
    if name not in METRICS:
        raise ValueError(f"{name} is not one of the provider's metrics (airflow_provider_anthropix.metrics.METRICS)")
    stats = _stats()
    if stats is None:
        return
    clean = {k: str(v) for k, v in (tags or {}).items() if v is not None and v != ""}
    try:
        getattr(stats, method)(name, value, tags=clean)
    except Exception as exc:  # a metrics backend must never fail a task
        if not _warned:
            _warned = True
            log.warning(
                "Could not send metric %s (%s: %s); later failures are not logged", name, type(exc).__name__, exc
            )


def incr(name: str, count: float = 1, *, tags: Mapping[str, Any] | None = None) -> None:
    """Add ``count`` to counter ``name`` (nothing for 0)."""
    if count:
        _send("incr", name, count, tags)


def gauge(name: str, value: float, *, tags: Mapping[str, Any] | None = None) -> None:
    """Set gauge ``name``."""
    _send("gauge", name, value, tags)


def timing(name: str, seconds: float, *, tags: Mapping[str, Any] | None = None) -> None:
    """Record ``seconds`` for timer ``name`` (StatsD sends milliseconds)."""
    _send("timing", name, timedelta(seconds=max(0.0, seconds)), tags)

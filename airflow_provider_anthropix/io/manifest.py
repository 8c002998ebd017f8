"""The ``_manifest.json`` of an export: what was published and what it contains.

Written last, it is the mark of a complete export. It lists each object with its size,
line count and sha256, the counts per result type, token totals and the estimated cost,
so a downstream task can check and report without reading the results. The XCom of the
operator is a smaller summary of it (:func:`xcom_summary`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pendulum

from airflow_provider_anthropix.api.models import RequestCounts
from airflow_provider_anthropix.cost.pricing import (
    PriceTable,
    UnknownModelPrice,
    UsageCost,
    cache_savings_usd,
    model_price,
)
from airflow_provider_anthropix.io.jsonl import FileInfo
from airflow_provider_anthropix.io.summary import Summariser

MANIFEST_VERSION = 1


def build_manifest(
    *,
    batch_id: str,
    destination: str,
    output_format: str,
    compression: str | None,
    split_by_result_type: bool,
    files: Sequence[FileInfo],
    summary: Summariser,
    expected: RequestCounts | None,
    cost: UsageCost,
    problems: Sequence[str],
    started_at: pendulum.DateTime,
    ended_at: pendulum.DateTime,
    bytes_downloaded: int,
    estimate: Mapping[str, Any] | None = None,
    price_table: PriceTable | None = None,
) -> dict[str, Any]:
    base = destination.rstrip("/")
    seconds = max(ended_at.timestamp() - started_at.timestamp(), 0.0)
    return {
        "manifest_version": MANIFEST_VERSION,
        "batch_id": batch_id,
        "destination": destination,
        "format": output_format,
        "compression": compression,
        "split_by_result_type": split_by_result_type,
        "files": [{**info.to_dict(), "uri": f"{base}/{info.name}"} for info in files],
        "lines": summary.lines,
        "counts": dict(summary.counts),
        "errored_by_type": dict(sorted(summary.errored_by_type.items())),
        "expected_counts": expected.to_dict() if expected is not None else None,
        "complete": not problems,
        "problems": list(problems),
        "duplicates": {"count": summary.duplicate_count, "examples": list(summary.duplicate_examples)},
        "tokens": summary.tokens.to_dict(),
        "tokens_by_model": {model: t.to_dict() for model, t in sorted(summary.tokens_by_model.items())},
        **cost.to_dict(),
        "cache": cache_report(summary, price_table, ttl=(estimate or {}).get("cache_ttl")),
        **reconcile(summary, cost, estimate),
        "bytes_downloaded": bytes_downloaded,
        "started_at": started_at.to_iso8601_string(),
        "ended_at": ended_at.to_iso8601_string(),
        "duration_seconds": round(seconds, 3),
    }


def cache_report(summary: Summariser, table: PriceTable | None, *, ttl: str | None = None) -> dict[str, Any]:
    """Prompt caching as billed: tokens written and read, the hit rate (read / (read + written)) and the USD saved."""
    tokens = summary.tokens
    cached = tokens.cache_creation_input + tokens.cache_read_input
    saved = 0.0
    for model, totals in summary.tokens_by_model.items():
        try:
            saved += cache_savings_usd(totals, model_price(model, table), ttl=ttl)
        except UnknownModelPrice:
            continue
    return {
        "write_tokens": tokens.cache_creation_input,
        "read_tokens": tokens.cache_read_input,
        "hit_rate": round(tokens.cache_read_input / cached, 4) if cached else None,
        "saved_usd": round(saved, 6),
    }


def _relative(actual: float, estimated: float) -> float | None:
    return round((estimated - actual) / actual, 4) if actual else None


def reconcile(summary: Summariser, cost: UsageCost, estimate: Mapping[str, Any] | None) -> dict[str, Any]:
    """``actual`` (tokens and cost, by model) and, when the estimate made before sending is known, it and its error.

    The relative error is (estimated - actual) / actual: positive when the estimate was high.
    Input tokens include cache writes and reads (the estimate splits them the same way).
    """
    actual = {
        "input_tokens": summary.tokens.input,
        "cache_creation_input_tokens": summary.tokens.cache_creation_input,
        "cache_read_input_tokens": summary.tokens.cache_read_input,
        "output_tokens": summary.tokens.output,
        "cost_usd": cost.usd,
        "by_model": {model: t.to_dict() for model, t in sorted(summary.tokens_by_model.items())},
    }
    if not isinstance(estimate, Mapping):
        return {"actual": actual}

    def number(key: str) -> float:
        value = estimate.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

    all_input = summary.tokens.input + summary.tokens.cache_creation_input + summary.tokens.cache_read_input
    estimated_input = number("input_tokens") + number("cache_creation_input_tokens") + number("cache_read_input_tokens")
    bound = number("input_tokens_bound")
    return {
        "actual": actual,
        "estimate": dict(estimate),
        "estimate_error": {
            "input_tokens": _relative(all_input, estimated_input),
            "input_tokens_within_bound": abs(estimated_input - all_input) <= bound,
            "output_tokens_vs_expected": _relative(summary.tokens.output, number("output_tokens_expected")),
            "cost_vs_expected": _relative(cost.usd, number("expected_cost_usd")),
            "note": "the requests that did not succeed report no usage; their share is in counts",
        },
    }


def xcom_summary(manifest: dict[str, Any], manifest_uri: str) -> dict[str, Any]:
    """Paths, counts, tokens and cost: small and JSON-safe, never a result."""
    return {
        "batch_id": manifest["batch_id"],
        "destination": manifest["destination"],
        "manifest": manifest_uri,
        "files": [entry["uri"] for entry in manifest["files"]],
        "lines": manifest["lines"],
        "counts": manifest["counts"],
        "complete": manifest["complete"],
        "tokens": manifest["tokens"],
        "estimated_cost_usd": manifest["estimated_cost_usd"],
    }

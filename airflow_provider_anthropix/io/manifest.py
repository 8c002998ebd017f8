"""The ``_manifest.json`` of an export: what was published and what it contains.

Written last, it is the mark of a complete export. It lists each object with its size,
line count and sha256, the counts per result type, token totals and the estimated cost,
so a downstream task can check and report without reading the results. The XCom of the
operator is a smaller summary of it (:func:`xcom_summary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pendulum

from airflow_provider_anthropix.api.models import RequestCounts
from airflow_provider_anthropix.io.jsonl import FileInfo
from airflow_provider_anthropix.io.pricing import CostEstimate
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
    cost: CostEstimate,
    problems: Sequence[str],
    started_at: pendulum.DateTime,
    ended_at: pendulum.DateTime,
    bytes_downloaded: int,
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
        "bytes_downloaded": bytes_downloaded,
        "started_at": started_at.to_iso8601_string(),
        "ended_at": ended_at.to_iso8601_string(),
        "duration_seconds": round(seconds, 3),
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

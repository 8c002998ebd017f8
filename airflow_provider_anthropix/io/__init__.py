"""Streaming results to object storage: summarise, write (JSONL, gzip, Parquet), publish atomically.

No HTTP here: the functions take a stream of bytes (from the hook, or anything else)
and an ``ObjectStoragePath``.
"""

from __future__ import annotations

from airflow_provider_anthropix.io.checks import ResultsMismatchError
from airflow_provider_anthropix.io.export import ExportInterrupted, ExportOptions, ExportResult, export_results
from airflow_provider_anthropix.io.pricing import DEFAULT_PRICE_TABLE, estimate_cost
from airflow_provider_anthropix.io.publish import MANIFEST_NAME, AtomicPublisher, DestinationError, read_manifest
from airflow_provider_anthropix.io.summary import ResultsFormatError, Summariser

__all__ = [
    "DEFAULT_PRICE_TABLE",
    "MANIFEST_NAME",
    "AtomicPublisher",
    "DestinationError",
    "ExportInterrupted",
    "ExportOptions",
    "ExportResult",
    "ResultsFormatError",
    "ResultsMismatchError",
    "Summariser",
    "estimate_cost",
    "export_results",
    "read_manifest",
]

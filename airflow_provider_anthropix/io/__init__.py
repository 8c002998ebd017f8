"""Streaming results to object storage: summarise, write (JSONL, gzip, Parquet), publish atomically.

No HTTP here: the functions take a stream of bytes (from the hook, or anything else)
and an ``ObjectStoragePath``.

Names are imported on first use, not with the package, so that importing one ``io`` module
(from an operator, at DAG-parse time) does not load the whole export pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_anthropix._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_provider_anthropix.cost.pricing import (
        DEFAULT_PRICE_TABLE,
        estimate_cost,
        usage_cost,
    )
    from airflow_provider_anthropix.io.checks import (
        ResultsMismatchError,
    )
    from airflow_provider_anthropix.io.export import (
        ExportInterrupted,
        ExportOptions,
        ExportResult,
        export_results,
    )
    from airflow_provider_anthropix.io.publish import (
        MANIFEST_NAME,
        AtomicPublisher,
        DestinationError,
        read_manifest,
    )
    from airflow_provider_anthropix.io.summary import (
        ResultsFormatError,
        Summariser,
    )

#: Public name -> the module that defines it, imported on first access.
_LAZY: dict[str, str] = {
    "AtomicPublisher": "airflow_provider_anthropix.io.publish",
    "DEFAULT_PRICE_TABLE": "airflow_provider_anthropix.cost.pricing",
    "DestinationError": "airflow_provider_anthropix.io.publish",
    "ExportInterrupted": "airflow_provider_anthropix.io.export",
    "ExportOptions": "airflow_provider_anthropix.io.export",
    "ExportResult": "airflow_provider_anthropix.io.export",
    "MANIFEST_NAME": "airflow_provider_anthropix.io.publish",
    "ResultsFormatError": "airflow_provider_anthropix.io.summary",
    "ResultsMismatchError": "airflow_provider_anthropix.io.checks",
    "Summariser": "airflow_provider_anthropix.io.summary",
    "estimate_cost": "airflow_provider_anthropix.cost.pricing",
    "usage_cost": "airflow_provider_anthropix.cost.pricing",
    "export_results": "airflow_provider_anthropix.io.export",
    "read_manifest": "airflow_provider_anthropix.io.publish",
}


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)

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
    "usage_cost",
]

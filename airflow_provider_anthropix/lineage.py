"""OpenLineage for the operators: datasets named by the OpenLineage conventions, and the provider's run facet.

The operators' ``get_openlineage_facets_on_start/complete/failure`` methods (see
:mod:`airflow_provider_anthropix.operators.observe`) build their answer here. Naming and the
run's facts are plain code; the OpenLineage classes are imported only inside
:func:`operator_lineage`, which runs only when Airflow's OpenLineage listener calls an
operator, so nothing here needs ``apache-airflow-providers-openlineage`` unless it is installed
and enabled, and a DAG file never imports this module.

Dataset names (https://openlineage.io/docs/spec/naming):

==========================  =====================================================  ==============
URI                         namespace                                              name
==========================  =====================================================  ==============
``file:///data/x``          ``file``                                               ``/data/x``
``file://host/data/x``      ``file://host``                                        ``/data/x``
``s3://bucket/a/b``         ``s3://bucket``                                        ``a/b``
``gs://bucket/a/b``         ``gs://bucket``                                        ``a/b``
``abfs[s]://c/a/b``         ``abfss://c@<account>.dfs.core.windows.net``          ``a/b``
``wasb[s]://c/a/b``         ``wasbs://c@<account>.blob.core.windows.net``          ``a/b``
other ``scheme://host/p``   ``scheme://host``                                      ``/p``
==========================  =====================================================  ==============

Nothing secret and no prompt text goes into a facet: the run facet carries ids, counts, token
totals and dollars; a URI's ``conn_id@`` is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

#: The provider's run facet, under this key in ``run.facets``.
RUN_FACET = "anthropix_batch"
#: Where the run facet's fields are described.
RUN_FACET_DOC = "docs/lineage.md"

_S3 = {"s3", "s3a", "s3n"}
_GCS = {"gs", "gcs"}
_ADLS = {"abfs", "abfss", "az", "adl"}
_BLOB = {"wasb", "wasbs"}
_LOCAL = {"", "file", "local"}


def dataset_name(uri: str, *, azure_account: str | None = None) -> tuple[str, str]:
    """``(namespace, name)`` of the data at ``uri``, by the OpenLineage naming conventions (see the module).

    :param uri: a URI or an absolute local path; a ``conn_id@`` before the bucket is left out.
    :param azure_account: the storage account of an ``abfs://`` / ``wasb://`` URI that does not name it.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme in _LOCAL:
        host = "" if scheme == "" else parts.netloc
        path = (parts.path if scheme else uri).rstrip("/") or "/"
        return ("file" if host in ("", "localhost") else f"file://{host}"), path
    netloc = parts.netloc
    key = parts.path.lstrip("/").rstrip("/")
    if scheme in _ADLS or scheme in _BLOB:
        container, _, host = netloc.partition("@")
        if not host and azure_account:
            suffix = "dfs" if scheme in _ADLS else "blob"
            host = f"{azure_account}.{suffix}.core.windows.net"
        namespace = ("abfss" if scheme in _ADLS else "wasbs") + f"://{container}"
        return (f"{namespace}@{host}" if host else namespace), key or "/"
    bucket = netloc.rpartition("@")[2]
    if scheme in _S3:
        return f"s3://{bucket}", key or "/"
    if scheme in _GCS:
        return f"gs://{bucket}", key or "/"
    return f"{scheme}://{bucket}", "/" + key


def storage_dataset(path: ObjectStoragePath) -> tuple[str, str]:
    """``(namespace, name)`` of an ``ObjectStoragePath`` (the storage account of Azure paths read from its filesystem)."""
    from airflow_provider_anthropix.io.publish import destination_uri, protocol_of

    account = None
    if protocol_of(path) in _ADLS | _BLOB:
        try:
            account = getattr(path.fs, "account_name", None)
        except Exception:  # the filesystem could not be built: name the container alone
            account = None
    return dataset_name(destination_uri(path), azure_account=account if isinstance(account, str) else None)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int_counts(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


@dataclass
class RunFacts:
    """What one task did, for the run facet and the metrics: ids, counts, tokens, dollars (never a prompt).

    Filled from the operator's own values (a batch id, an estimate) and from the manifest an
    export published (:meth:`add_manifest`), which both the results export and the table write.
    """

    batch_ids: list[str] = field(default_factory=list)
    #: How the create got its batch: ``created``, ``adopted`` (after a lost answer) or ``reused``.
    create: str | None = None
    requests: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    estimated_cost_usd: float | None = None
    worst_case_cost_usd: float | None = None
    actual_cost_usd: float | None = None
    batches: int | None = None
    retry_rounds: int | None = None
    rows: int | None = None
    export_bytes: int | None = None
    export_seconds: float | None = None
    export_files: int | None = None
    manifest: str | None = None
    dry_run: bool = False

    @property
    def estimate_error(self) -> float | None:
        """(estimated - actual) / actual cost, as the manifest's reconciliation computes it; None unless both are known."""
        if self.estimated_cost_usd is None or not self.actual_cost_usd:
            return None
        return round((self.estimated_cost_usd - self.actual_cost_usd) / self.actual_cost_usd, 4)

    def add_batch(self, batch_id: str | None) -> None:
        if batch_id and batch_id not in self.batch_ids:
            self.batch_ids.append(str(batch_id))

    def add_estimate(self, estimate: Mapping[str, Any] | None) -> None:
        """The create's or the job's estimate (its figures only; ``most_expensive`` and the rest stay out)."""
        if not isinstance(estimate, Mapping):
            return
        self.estimated_cost_usd = _number(estimate.get("expected_cost_usd"))
        self.worst_case_cost_usd = _number(estimate.get("worst_case_cost_usd"))
        requests = estimate.get("requests")
        if self.requests is None and isinstance(requests, int):
            self.requests = requests

    def add_manifest(self, manifest: Mapping[str, Any], uri: str | None = None) -> None:
        """The facts of a published export: a results manifest (fetch, job) or a table's."""
        self.manifest = uri or self.manifest
        if isinstance(manifest.get("batch_id"), str) and manifest["batch_id"].startswith("msgbatch"):
            self.add_batch(manifest["batch_id"])
        for entry in manifest.get("batch_ids") or []:
            self.add_batch(str(entry))
        job = manifest.get("job")
        if isinstance(job, Mapping):
            for entry in job.get("batch_list") or []:
                if isinstance(entry, Mapping):
                    self.add_batch(entry.get("batch_id"))
            if isinstance(job.get("batches"), int):
                self.batches = job["batches"]
            if isinstance(job.get("rounds"), int):
                self.retry_rounds = max(0, job["rounds"] - 1)
            if isinstance(job.get("total_requests"), int):
                self.requests = job["total_requests"]
        self.counts = _int_counts(manifest.get("counts"))
        if self.requests is None and self.counts:
            self.requests = sum(self.counts.values())
        self.tokens = _int_counts(manifest.get("tokens"))
        actual = manifest.get("actual")
        cost = actual.get("cost_usd") if isinstance(actual, Mapping) else manifest.get("cost_usd")
        self.actual_cost_usd = _number(cost)
        self.add_estimate(manifest.get("estimate"))
        files = [f for f in manifest.get("files") or [] if isinstance(f, Mapping)]
        sizes = [f.get("size", f.get("bytes")) for f in files]
        self.export_files = len(files)
        self.export_bytes = sum(s for s in sizes if isinstance(s, int))
        seconds = manifest.get("duration_seconds", manifest.get("export_seconds"))
        self.export_seconds = _number(seconds)
        rows = manifest.get("rows", manifest.get("lines"))
        self.rows = rows if isinstance(rows, int) else None

    def add_job_summary(self, summary: Mapping[str, Any]) -> None:
        """A dry run's return value (nothing was exported)."""
        if summary.get("dry_run"):
            self.dry_run = True
            self.requests = summary.get("requests") if isinstance(summary.get("requests"), int) else self.requests
            self.batches = summary.get("batches") if isinstance(summary.get("batches"), int) else self.batches
            self.add_estimate(summary.get("estimate"))

    def facet_fields(self) -> dict[str, Any]:
        """The run facet's fields (camelCase, as OpenLineage facets are); unknown values are left out."""
        fields = {
            "batchIds": list(self.batch_ids),
            "create": self.create,
            "requests": self.requests,
            "requestCounts": dict(self.counts) or None,
            "tokens": dict(self.tokens) or None,
            "estimatedCostUsd": self.estimated_cost_usd,
            "worstCaseCostUsd": self.worst_case_cost_usd,
            "actualCostUsd": self.actual_cost_usd,
            "estimateError": self.estimate_error,
            "batches": self.batches,
            "retryRounds": self.retry_rounds,
            "rows": self.rows,
            "exportBytes": self.export_bytes,
            "exportSeconds": self.export_seconds,
            "manifest": self.manifest,
            "dryRun": self.dry_run or None,
        }
        return {k: v for k, v in fields.items() if v is not None}


def parquet_fields(schema: Any) -> list[tuple[str, str]]:
    """``(name, type)`` of each column of a pyarrow schema (types as Arrow prints them: ``string``, ``int64``)."""
    return [(str(f.name), str(f.type)) for f in schema]


@dataclass(frozen=True)
class LineageDataset:
    """One dataset of a task: its name, and for an output what is known of it (columns, size)."""

    namespace: str
    name: str
    fields: Sequence[tuple[str, str]] | None = None
    rows: int | None = None
    bytes: int | None = None
    files: int | None = None


def _run_facet_class() -> Any:
    """The run facet's class, made on first use (it subclasses OpenLineage's ``RunFacet``)."""
    global _RUN_FACET_CLASS
    if _RUN_FACET_CLASS is None:
        import attr
        from openlineage.client.facet_v2 import RunFacet

        @attr.define
        class AnthropixBatchRunFacet(RunFacet):  # type: ignore[misc]
            """The provider's run facet: the batches of the task, their outcome, tokens and cost (see docs/lineage.md)."""

            batchIds: list[str] = attr.field(factory=list)
            create: str | None = attr.field(default=None)
            requests: int | None = attr.field(default=None)
            requestCounts: dict[str, int] | None = attr.field(default=None)
            tokens: dict[str, int] | None = attr.field(default=None)
            estimatedCostUsd: float | None = attr.field(default=None)
            worstCaseCostUsd: float | None = attr.field(default=None)
            actualCostUsd: float | None = attr.field(default=None)
            estimateError: float | None = attr.field(default=None)
            batches: int | None = attr.field(default=None)
            retryRounds: int | None = attr.field(default=None)
            rows: int | None = attr.field(default=None)
            exportBytes: int | None = attr.field(default=None)
            exportSeconds: float | None = attr.field(default=None)
            manifest: str | None = attr.field(default=None)
            dryRun: bool | None = attr.field(default=None)

            # Ids, counts and figures: nothing for the secrets masker to look at.
            _additional_skip_redact = ["batchIds", "manifest"]

        _RUN_FACET_CLASS = AnthropixBatchRunFacet
    return _RUN_FACET_CLASS


_RUN_FACET_CLASS: Any = None


def operator_lineage(
    inputs: Sequence[LineageDataset], outputs: Sequence[LineageDataset], facts: RunFacts | None = None
) -> Any:
    """The ``OperatorLineage`` Airflow's OpenLineage listener asks an operator for.

    Imports the OpenLineage provider and client here, on the listener's call: neither is needed
    otherwise.
    """
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset, OutputDataset
    from openlineage.client.facet_v2 import output_statistics_output_dataset, schema_dataset

    def facets(dataset: LineageDataset) -> dict[str, Any]:
        if not dataset.fields:
            return {}
        return {
            "schema": schema_dataset.SchemaDatasetFacet(
                fields=[
                    schema_dataset.SchemaDatasetFacetFields(name=name, type=kind, ordinal_position=position)
                    for position, (name, kind) in enumerate(dataset.fields, start=1)
                ]
            )
        }

    def output(dataset: LineageDataset) -> Any:
        output_facets: dict[str, Any] = {}
        if dataset.rows is not None or dataset.bytes is not None:
            output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=dataset.rows, size=dataset.bytes, fileCount=dataset.files
            )
        return OutputDataset(
            namespace=dataset.namespace, name=dataset.name, facets=facets(dataset), outputFacets=output_facets
        )

    run_facets: dict[str, Any] = {}
    if facts is not None:
        run_facets[RUN_FACET] = _run_facet_class()(**facts.facet_fields())
    return OperatorLineage(
        inputs=[Dataset(namespace=d.namespace, name=d.name, facets=facets(d)) for d in inputs],
        outputs=[output(d) for d in outputs],
        run_facets=run_facets,
    )

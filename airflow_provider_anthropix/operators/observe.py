"""What the operators tell the outside: OpenLineage datasets and facets, and metrics.

:class:`ObservedOperator` gives the create, the fetch, the job and the table the three methods
Airflow's OpenLineage listener calls (``get_openlineage_facets_on_start``, ``..._on_complete``,
``..._on_failure``) and the few calls that send their metrics. An operator says which paths
are its inputs and outputs (:meth:`ObservedOperator._lineage_paths`) and records its facts
while it runs (:attr:`ObservedOperator.observed`); the rest is here, once.

Imported by the operators' modules, so only the standard library is imported at the top: the
lineage and metrics modules (and OpenLineage itself, which is optional) are imported when a
task runs or the listener asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_anthropix.lineage import LineageDataset, RunFacts

#: The outcomes that have a metric of their own (``anthropix.requests.<outcome>``).
_OUTCOMES = ("succeeded", "errored", "canceled", "expired", "invalid_output")


class ObservedOperator:
    """OpenLineage methods and metrics, for an operator that says what it reads and writes.

    A subclass overrides :meth:`_lineage_paths` (and :meth:`_output_fields` when its output
    has known columns) and calls the ``_observe_*`` methods as it learns facts.
    """

    anthropix_conn_id: str

    # -- facts ---------------------------------------------------------------------------------

    @property
    def observed(self) -> RunFacts:
        """The facts of this try (batch ids, counts, tokens, cost), filled while the task runs."""
        facts = self.__dict__.get("_anthropix_observed")
        if facts is None:
            from airflow_provider_anthropix.lineage import RunFacts

            facts = RunFacts()
            self.__dict__["_anthropix_observed"] = facts
        return facts

    def _metric_tags(self) -> dict[str, str]:
        return {"conn_id": self.anthropix_conn_id, "operator": type(self).__name__}

    def _observe_batch(self, batch_id: str, how: str) -> None:
        """The create's batch, and how it was got (``created``, ``adopted``, ``reused``)."""
        from airflow_provider_anthropix import metrics

        self.observed.add_batch(batch_id)
        self.observed.create = how
        if how == "adopted":
            metrics.incr("anthropix.batches.adopted", tags=self._metric_tags())

    def _observe_job_event(self, event: str) -> None:
        """A batch job's event (see :class:`~airflow_provider_anthropix.workflow.job.JobRunner`'s ``observe``)."""
        from airflow_provider_anthropix import metrics

        if event == "batch_adopted":
            metrics.incr("anthropix.batches.adopted", tags=self._metric_tags())
        elif event == "retry_round":
            metrics.incr("anthropix.job.retry_rounds", tags=self._metric_tags())

    def _observe_estimate(self, estimate: Mapping[str, Any] | None, *, sent: bool) -> None:
        """The estimate made before sending; counted as estimated spend only when the requests are sent."""
        from airflow_provider_anthropix import metrics

        self.observed.add_estimate(estimate)
        if sent and self.observed.estimated_cost_usd is not None:
            metrics.incr("anthropix.cost.estimated_usd", self.observed.estimated_cost_usd, tags=self._metric_tags())

    def _observe_export(self, manifest: Mapping[str, Any] | None, uri: str | None = None) -> None:
        """A published export's manifest: outcome counts, actual cost, the estimate's error, bytes and time."""
        from airflow_provider_anthropix import metrics

        if not isinstance(manifest, Mapping):
            return
        facts = self.observed
        facts.add_manifest(manifest, uri)
        tags = self._metric_tags()
        for outcome in _OUTCOMES:
            metrics.incr(f"anthropix.requests.{outcome}", facts.counts.get(outcome, 0), tags=tags)
        if facts.actual_cost_usd is not None:
            metrics.incr("anthropix.cost.actual_usd", facts.actual_cost_usd, tags=tags)
        if facts.estimate_error is not None:
            metrics.gauge("anthropix.cost.estimate_error", facts.estimate_error, tags=tags)
        if facts.export_bytes is not None:
            metrics.incr("anthropix.export.bytes", facts.export_bytes, tags=tags)
        if facts.export_seconds is not None:
            metrics.timing("anthropix.export.duration", facts.export_seconds, tags=tags)

    # -- lineage ---------------------------------------------------------------------------------

    def _lineage_paths(self) -> tuple[list[tuple[Any, str | None]], list[tuple[Any, str | None]]]:
        """``(inputs, outputs)``: each a ``(path or URI, conn_id)`` as the operator's arguments give them."""
        return [], []

    def _output_fields(self, complete: bool) -> list[tuple[str, str]] | None:
        """The columns of the output, when it is a Parquet dataset whose columns are known."""
        return None

    def _datasets(self, paths: list[tuple[Any, str | None]]) -> list[LineageDataset]:
        from airflow_provider_anthropix.io.publish import resolve_destination
        from airflow_provider_anthropix.lineage import LineageDataset, dataset_name, storage_dataset

        found = []
        for value, conn_id in paths:
            if value is None or not str(value).strip() or "{{" in str(value):
                continue  # no path, or one not rendered yet
            try:
                namespace, name = storage_dataset(resolve_destination(value, conn_id))
            except Exception:  # a path the task would refuse: name it from its text alone
                namespace, name = dataset_name(str(value))
            found.append(LineageDataset(namespace, name))
        return found

    def _operator_lineage(self, *, complete: bool, facts: RunFacts | None) -> Any:
        from dataclasses import replace

        from airflow_provider_anthropix.lineage import operator_lineage

        inputs, outputs = self._lineage_paths()
        outs = self._datasets(outputs)
        if outs:
            fields = self._output_fields(complete)
            first = outs[0]
            if complete and facts is not None:
                first = replace(first, rows=facts.rows, bytes=facts.export_bytes, files=facts.export_files)
            outs[0] = replace(first, fields=fields)
        return operator_lineage(self._datasets(inputs), outs, facts)

    def get_openlineage_facets_on_start(self) -> Any:
        """Inputs and outputs as the rendered arguments name them (called by Airflow's OpenLineage listener)."""
        return self._operator_lineage(complete=False, facts=None)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inputs, outputs (with columns and size when known) and the ``anthropix_batch`` run facet."""
        return self._operator_lineage(complete=True, facts=self.observed)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """As on completion, with the facts the task had gathered when it failed."""
        return self._operator_lineage(complete=False, facts=self.observed)

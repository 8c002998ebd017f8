"""FetchBatchResultsOperator: stream a batch's results into object storage, all or nothing.

The operator is thin: it checks the batch and the destination, hands the hook's byte
stream to :func:`airflow_provider_anthropix.io.export_results`, and returns the manifest's
summary. Results never pass through XCom or memory as a whole.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import Asset, AssetAlias, BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID
from airflow_provider_anthropix.links import AnthropicConsoleLink, BatchResultsLink
from airflow_provider_anthropix.mixins import AnthropixHookMixin
from airflow_provider_anthropix.operators.observe import ObservedOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_anthropix.api.models import MessageBatch
    from airflow_provider_anthropix.cost.pricing import PriceTable

#: Bytes asked of the network per read: large reads keep per-chunk Python work negligible.
RESULTS_CHUNK_BYTES = 1 << 20


def static_asset_uri(destination: str | ObjectStoragePath) -> str | None:
    """The Asset URI of a destination known at DAG parse time, or None if it is a template.

    Computed from the text alone (no filesystem or connection is touched while parsing);
    a ``conn_id@`` in the URI is left out, as it names credentials, not the data.
    """
    from airflow_provider_anthropix.io.publish import destination_uri

    if isinstance(destination, ObjectStoragePath):
        return destination_uri(destination).rstrip("/")
    text = str(destination)
    if "{{" in text or "{%" in text:
        return None
    parts = urlsplit(text)
    if not parts.scheme:
        return "file://" + text.rstrip("/") if text.startswith("/") else None
    netloc = parts.netloc.rpartition("@")[2]
    if parts.scheme in ("file", "local"):
        return "file://" + parts.path.rstrip("/")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class FetchBatchResultsOperator(AnthropixHookMixin, ObservedOperator, BaseOperator):
    """Download the results of an ended batch into a folder of object storage.

    The folder gets ``results.jsonl`` (or ``results.jsonl.gz`` / ``results.parquet``, or one
    object per outcome with ``split_by_result_type``) and, last, ``_manifest.json``: a folder
    without a manifest is incomplete. Lines are stored exactly as the API sent them.

    :param batch_id: the batch (templated), e.g. ``create.output``; or several (a list, e.g. the
        output of a mapped ``CreateBatchOperator``): their results are merged into one result
        set, every custom_id once (a repeated one fails the export), with one manifest.
    :param destination: folder URI or ``ObjectStoragePath`` (templated): ``file:///data/run``,
        ``s3://bucket/prefix``, ``gs://...``; any scheme with an Airflow filesystem.
    :param format: ``jsonl`` (default) or ``parquet`` (extra ``airflow-provider-anthropix[parquet]``).
    :param compression: ``None`` or ``"gzip"`` for jsonl; the Parquet codec for parquet (default zstd).
    :param split_by_result_type: one object per outcome: succeeded, errored, canceled, expired.
    :param anthropix_conn_id: the Anthropix connection.
    :param price_table: USD per million tokens (standard price) per model prefix, replacing
        the default table of :mod:`airflow_provider_anthropix.cost.pricing`; the estimate
        applies the 50% batch discount.
    :param on_mismatch: ``fail`` (default) or ``warn`` when the results do not match the
        batch's request_counts or repeat a custom_id.
    :param destination_conn_id: Airflow connection for the store (e.g. an ``aws`` one for s3://).
    :param progress_interval: seconds between progress lines in the log.
    :param max_errored_ratio: after publishing, fail the task when more than this share of
        requests errored (``None``, the default: never). The results and the manifest stay in
        place, so the errored lines can be looked at: "land, then gate".
    :param fail_on_canceled: after publishing, fail when any request was canceled.
    :param fail_on_expired: after publishing, fail when any request expired.
    :param estimate: the create's cost estimate (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='create', key='estimate') }}"``: the manifest then holds it beside
        the actual tokens and cost, with the relative error (reconciliation; see docs/cost.md).

    The policy is the sensor's (:mod:`airflow_provider_anthropix.workflow.outcome`); its failure
    message counts the errors by type (``invalid_request_error: 12, overloaded_error: 3``), as
    the manifest's ``errored_by_type`` does.

    Outlets: an Asset for a destination known at parse time is added automatically, so
    downstream DAGs can be scheduled on it. For a templated destination, pass
    ``outlets=[AssetAlias("...")]``: the rendered destination is attached to the alias.

    Returns (XCom): ``{"batch_id", "destination", "manifest", "files", "lines", "counts",
    "complete", "tokens", "estimated_cost_usd"}``.

    OpenLineage (with ``apache-airflow-providers-openlineage``): ``destination`` is the output (with a
    ``schema`` facet for Parquet); the ``anthropix_batch`` run facet holds the batch ids, the counts by
    outcome, the tokens and the cost, estimated and actual (docs/lineage.md).
    """

    template_fields: Sequence[str] = ("batch_id", "destination", "destination_conn_id", "anthropix_conn_id", "estimate")
    ui_color = "#e8d5c4"
    operator_extra_links = (AnthropicConsoleLink(), BatchResultsLink())

    def __init__(
        self,
        *,
        batch_id: str | Sequence[str],
        destination: str | ObjectStoragePath,
        format: str = "jsonl",
        compression: str | None = None,
        split_by_result_type: bool = False,
        anthropix_conn_id: str = DEFAULT_CONN_ID,
        price_table: PriceTable | None = None,
        on_mismatch: str = "fail",
        destination_conn_id: str | None = None,
        progress_interval: float = 5.0,
        max_errored_ratio: float | None = None,
        fail_on_canceled: bool = False,
        fail_on_expired: bool = False,
        estimate: Any = None,
        **kwargs: Any,
    ) -> None:
        # Bad options fail when the DAG is parsed, not hours later.
        from airflow_provider_anthropix.io.export import ExportOptions
        from airflow_provider_anthropix.workflow.outcome import check_max_errored_ratio

        ratio = check_max_errored_ratio(max_errored_ratio)
        self.export_options = ExportOptions(
            output_format=format,
            compression=compression,
            split_by_result_type=split_by_result_type,
            price_table=price_table,
            on_mismatch=on_mismatch,
            progress_interval=progress_interval,
        )
        if "outlets" not in kwargs:
            uri = static_asset_uri(destination)
            if uri is not None:
                kwargs["outlets"] = [Asset(uri=uri)]
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.destination = destination
        self.anthropix_conn_id = anthropix_conn_id
        self.destination_conn_id = destination_conn_id
        self.max_errored_ratio = ratio
        self.fail_on_canceled = fail_on_canceled
        self.fail_on_expired = fail_on_expired
        self.estimate = estimate
        self._kill_requested = False

    # -- checks before any download ----------------------------------------------------------

    def _batch_ids(self) -> list[str]:
        """``batch_id`` as a list: one id, a list of ids (e.g. a mapped create's output), or such a list as text."""
        value: Any = self.batch_id
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = _rendered_value(text)
                if value is None:
                    raise AirflowFailException(f"batch_id {text[:200]!r} is neither a batch id nor a list of them")
            else:
                value = [text] if text else []
        elif value is None:
            value = []
        ids = [str(item).strip() for item in value]
        if not ids or not all(ids):
            raise AirflowFailException("batch_id is empty; pass the id (or ids) returned by CreateBatchOperator")
        if len(set(ids)) != len(ids):
            raise AirflowFailException(f"batch_id lists a batch more than once: {', '.join(ids)}")
        return ids

    def _estimate_argument(self) -> dict[str, Any] | None:
        """The create's estimate as a dict: an XCom value, or its text as a non-native template renders it."""
        value: Any = self.estimate
        if value is None or value == "" or value == "None":
            return None
        if isinstance(value, str):
            value = _rendered_value(value)
        if not isinstance(value, Mapping):
            self.log.warning("estimate is not the create's estimate (a mapping); the manifest leaves it out")
            return None
        return dict(value)

    def _ended_batch(self, batch_id: str) -> MessageBatch:
        from airflow_provider_anthropix.api.errors import AnthropixError, NotFoundError

        try:
            batch = self.hook.get_batch(batch_id)
        except NotFoundError:
            raise AirflowFailException(
                f"batch {batch_id} was not found with connection {self.anthropix_conn_id!r} "
                "(wrong id, or another workspace)"
            ) from None
        except AnthropixError as exc:
            raise self.api_failure(exc, f"looking up batch {batch_id}") from None
        if not batch.is_ended:
            counts = batch.request_counts
            raise AirflowFailException(
                f"batch {batch.id} has not ended (processing_status={batch.processing_status}, "
                f"{counts.done:,}/{counts.total:,} requests done); wait for it with BatchEndedSensor first"
            )
        if batch.is_archived:
            raise AirflowFailException(
                f"the results of batch {batch.id} were archived at {batch.archived_at} (results are kept "
                "29 days) and can no longer be downloaded"
            )
        return batch

    def _destination_path(self) -> ObjectStoragePath:
        from airflow_provider_anthropix.operators.paths import storage_path

        return storage_path(self.destination, self.destination_conn_id, "destination")

    # -- the task --------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_anthropix.api.errors import AnthropixError
        from airflow_provider_anthropix.io.export import export_results
        from airflow_provider_anthropix.io.publish import AtomicPublisher
        from airflow_provider_anthropix.io.shards import merged_results

        self._kill_requested = False
        batches = [self._ended_batch(batch_id) for batch_id in self._batch_ids()]
        destination = self._destination_path()
        publisher = AtomicPublisher(destination)
        batch = batches[0] if len(batches) == 1 else _merged_view(batches)
        for ended in batches:
            self.observed.add_batch(ended.id)
        counts = batch.request_counts
        self.log.info(
            "%s ended: %s; results go to %s",
            f"Batch {batch.id}" if len(batches) == 1 else f"{len(batches)} batches",
            ", ".join(f"{n:,} {kind}" for kind, n in counts.to_dict().items() if n),
            publisher.uri,
        )
        if len(batches) == 1:
            chunks: Iterable[bytes] = self.hook.iter_result_bytes(batch, chunk_size=RESULTS_CHUNK_BYTES)
            extra: dict[str, Any] | None = None
        else:
            # One result set: the batches' streams one after the other, checked for repeated custom_ids.
            chunks = merged_results(
                (self.hook.iter_result_bytes(b, chunk_size=RESULTS_CHUNK_BYTES), ()) for b in batches
            )
            extra = {
                "batch_ids": [b.id for b in batches],
                "batches": [{"batch_id": b.id, "counts": b.request_counts.to_dict()} for b in batches],
            }
        estimate = self._estimate_argument()
        if estimate is not None:
            extra = {**(extra or {}), "estimate": estimate}
        try:
            result = export_results(
                chunks,
                destination,
                batch_id=batch.id,
                expected=counts,
                options=self.export_options,
                should_stop=lambda: self._kill_requested,
                logger=self.log,
                publisher=publisher,
                manifest_extra=extra,
            )
        except AnthropixError as exc:  # the API's and the files': one mapping (failures.py)
            raise self.api_failure(exc, f"downloading the results of batch {batch.id}") from None
        summary = result.xcom()
        self._observe_export(result.manifest, summary["manifest"])
        if extra is not None and "batch_ids" in extra:
            summary["batch_ids"] = extra["batch_ids"]
        self._gate(batch, result.manifest, summary["manifest"])
        self._record_asset_events(context, publisher.uri.rstrip("/"), summary)
        return summary

    def _gate(self, batch: MessageBatch, manifest: Mapping[str, Any], manifest_uri: str) -> None:
        """Land, then gate: the results are published; now apply the outcome policy to them."""
        from airflow_provider_anthropix.failures import enforce_outcome
        from airflow_provider_anthropix.workflow.outcome import evaluate_outcome

        if self.max_errored_ratio is None and not self.fail_on_canceled and not self.fail_on_expired:
            return
        outcome = evaluate_outcome(
            batch,
            max_errored_ratio=self.max_errored_ratio,
            fail_on_canceled=self.fail_on_canceled,
            fail_on_expired=self.fail_on_expired,
            errored_by_type=manifest.get("errored_by_type") or {},
        )
        enforce_outcome(outcome, self.log, note=f". The results were published first, see {manifest_uri}")

    def _record_asset_events(self, context: Context, uri: str, summary: Mapping[str, Any]) -> None:
        """Attach the manifest to the outlet event; resolve an AssetAlias to the rendered destination."""
        extra = {
            "batch_id": summary["batch_id"],
            "manifest": summary["manifest"],
            "lines": summary["lines"],
            "complete": summary["complete"],
        }
        events = context.get("outlet_events")
        if events is None:
            return
        for outlet in self.outlets or []:
            if isinstance(outlet, AssetAlias):
                events[outlet].add(Asset(uri=uri), extra=extra)
            elif isinstance(outlet, Asset) and outlet.uri.rstrip("/") == uri:
                events[outlet].extra.update(extra)

    def _lineage_paths(self) -> tuple[list[tuple[Any, str | None]], list[tuple[Any, str | None]]]:
        return [], [(self.destination, self.destination_conn_id)]

    def _output_fields(self, complete: bool) -> list[tuple[str, str]] | None:
        return results_parquet_fields(self.export_options.output_format)

    def on_kill(self) -> None:
        """Stop at the next chunk; the export then removes what it staged and publishes nothing."""
        self._kill_requested = True


def results_parquet_fields(output_format: str) -> list[tuple[str, str]] | None:
    """The columns of the Parquet results (``format="parquet"``), for the lineage ``schema`` facet; None for JSONL."""
    if output_format != "parquet":
        return None
    from airflow_provider_anthropix.io.parquet import parquet_schema
    from airflow_provider_anthropix.lineage import parquet_fields

    try:
        return parquet_fields(parquet_schema())
    except ImportError:  # no pyarrow: the export itself would have failed
        return None


def _rendered_value(text: str) -> Any:
    """An XCom value from its text: JSON, or the Python literal a non-native template renders; None if neither."""
    try:
        return json.loads(text)
    except ValueError:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return None


def _merged_view(batches: Sequence[MessageBatch]) -> MessageBatch:
    """Several ended batches seen as one: summed counts, for the log, the completeness check and the policy."""
    from airflow_provider_anthropix.api.models import MessageBatch

    totals: dict[str, int] = {}
    for batch in batches:
        for kind, n in batch.request_counts.to_dict().items():
            totals[kind] = totals.get(kind, 0) + n
    return MessageBatch.from_dict(
        {"id": f"{len(batches)} batches", "processing_status": "ended", "request_counts": totals}
    )

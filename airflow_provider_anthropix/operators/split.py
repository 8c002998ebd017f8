"""SplitRequestsOperator: cut a large input into batch-sized request files, for mapped creates.

For DAG authors who prefer a task per batch to one :class:`BatchJobOperator`: the split is
the same one the job uses (validated as a whole, custom_ids unique across the input, cut by
count and encoded size in input order), written as ``shard-00000.jsonl``, ... under
``destination``; the task returns their URIs for ``CreateBatchOperator.partial(...).expand(
requests_path=split.output)``. The same input always gives the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_anthropix.api.limits import MAX_BODY_BYTES, MAX_REQUESTS, check_batch_limits
from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID
from airflow_provider_anthropix.mixins import AnthropixHookMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

SHARD_PATTERN = "shard-*.jsonl"


class SplitRequestsOperator(AnthropixHookMixin, BaseOperator):
    """Validate a request input and write it as batch-sized JSONL files; returns their URIs.

    Each file holds complete requests (``default_params`` merged in), so a
    ``CreateBatchOperator`` per file needs no ``default_params`` of its own. Files of an
    earlier, longer split in the same folder are removed (only names this operator writes).

    :param requests_path: a JSONL(.gz) file, a folder of them, or a glob (templated).
    :param destination: the folder for the shard files (templated); object storage works.
    :param default_params: merged under every request's params (templated).
    :param max_requests_per_batch: most requests per file.
    :param max_bytes_per_batch: largest create body per file.
    :param anthropix_conn_id: the connection whose ``anthropic_version`` sets the validation rules.
    :param requests_path_conn_id: connection of the input's store.
    :param destination_conn_id: connection of the destination's store.
    :param max_problems_shown: how many validation problems the error lists before counting the rest.
    """

    template_fields: Sequence[str] = (
        "requests_path",
        "destination",
        "default_params",
        "anthropix_conn_id",
        "requests_path_conn_id",
        "destination_conn_id",
    )
    template_fields_renderers = {"default_params": "json"}
    ui_color = "#e8d5c4"

    def __init__(
        self,
        *,
        requests_path: str | ObjectStoragePath,
        destination: str | ObjectStoragePath,
        default_params: dict[str, Any] | None = None,
        max_requests_per_batch: int = MAX_REQUESTS,
        max_bytes_per_batch: int = MAX_BODY_BYTES,
        anthropix_conn_id: str = DEFAULT_CONN_ID,
        requests_path_conn_id: str | None = None,
        destination_conn_id: str | None = None,
        max_problems_shown: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_batch_limits(max_requests_per_batch, max_bytes_per_batch)
        self.requests_path = requests_path
        self.destination = destination
        self.default_params = default_params
        self.max_requests_per_batch = max_requests_per_batch
        self.max_bytes_per_batch = max_bytes_per_batch
        self.anthropix_conn_id = anthropix_conn_id
        self.requests_path_conn_id = requests_path_conn_id
        self.destination_conn_id = destination_conn_id
        self.max_problems_shown = max_problems_shown

    def execute(self, context: Context) -> list[str]:
        from airflow_provider_anthropix.api.errors import BatchValidationError
        from airflow_provider_anthropix.io.job_files import JobFiles
        from airflow_provider_anthropix.io.shards import (
            InputError,
            ShardWriter,
            describe_inputs,
            iter_input_requests,
            resolve_inputs,
            split_requests,
        )
        from airflow_provider_anthropix.operators.paths import storage_path

        api_version = self.client_config().anthropic_version
        source = storage_path(self.requests_path, self.requests_path_conn_id, "requests_path")
        folder = JobFiles(storage_path(self.destination, self.destination_conn_id, "destination"))
        writer = ShardWriter(
            folder.open_write,
            prefix="",
            max_requests=self.max_requests_per_batch,
            max_body_bytes=self.max_bytes_per_batch,
        )
        try:
            files = resolve_inputs(source)
            shards = split_requests(
                iter_input_requests(files),
                writer,
                api_version=api_version,
                default_params=self.default_params,
                max_problems_shown=self.max_problems_shown,
                source=describe_inputs(files),
                operator="SplitRequestsOperator",
            )
        except (InputError, BatchValidationError) as exc:
            folder.remove(writer.abandon())
            raise AirflowFailException(f"{exc}\n(nothing was written to {folder.uri})") from None
        written = {shard.name for shard in shards}
        stale = [
            name
            for name in (
                str(p).rstrip("/").rsplit("/", 1)[-1] for p in folder.fs.glob(f"{folder.base}/{SHARD_PATTERN}")
            )
            if name not in written
        ]
        folder.remove(stale)
        uris = [f"{folder.uri}/{shard.name}" for shard in shards]
        self.log.info(
            "Split %s requests from %d file(s) into %d request file(s) under %s%s",
            f"{sum(s.requests for s in shards):,}",
            len(files),
            len(shards),
            folder.uri,
            f"; removed {len(stale)} from an earlier split" if stale else "",
        )
        return uris

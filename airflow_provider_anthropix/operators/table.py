"""BatchTableOperator: a table of rows in, the same rows with the model's answers as typed columns out.

Built on :class:`~airflow_provider_anthropix.operators.job.BatchJobOperator`, not beside it:
the rows are rendered into a requests file under the destination (``_anthropix_table/``),
and from there the job's engine does the rest (split, crash-safe shards, one trigger, retry
rounds, the budget, the dry run, re-run identity). Only the export differs: the answers are
parsed, checked against ``output_schema`` and joined back to the input rows as a Parquet
dataset (see docs/table.md).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_anthropix.operators.fetch import static_asset_uri
from airflow_provider_anthropix.operators.job import BatchJobOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_anthropix.api.plan import PlanOptions
    from airflow_provider_anthropix.io.job_files import JobWorkspace
    from airflow_provider_anthropix.workflow.job import Wait

#: The table's own working folder under the destination (the rendered requests and what they came from).
TABLE_FOLDER = "_anthropix_table"
DRY_RUN_SUFFIX = "-dry-run"


class BatchTableOperator(BatchJobOperator):
    """Render each row of a table into a request, run them as one batch job, land the rows with their answers.

    - **Input** ``table_path``: a Parquet, CSV or JSONL file, a folder of them or a glob; read a
      slice at a time.
    - **Prompt**: ``prompt`` (the user turn) and ``system``, Jinja templates rendered per row with
      its columns (``{{ title }}``, or ``{{ row["odd name"] }}``) and ``prompt_vars``; or
      ``build_request(row) -> params`` for full control. They are not Airflow template fields:
      task-level values (``{{ ds }}``) reach the prompt through ``prompt_vars``, which is.
    - **Ids**: ``id_column`` names the row key (a valid custom_id is used as is; others get a
      stable derived id); without it, the row's position. Duplicate keys are refused before anything is sent.
    - **Answers**: ``output_schema`` (a JSON Schema dict or a Pydantic model class) is sent as
      ``output_config.format``; its top-level properties become typed columns. An answer that
      does not hold to it is ``invalid_output``; ``retry_invalid_output`` sends it again in the
      job's retry rounds. Without a schema the answer text is the ``answer`` column.
    - **Output** under ``destination``: ``part-00000.parquet``... and ``_manifest.json``, every
      input row once, in input order, with ``_custom_id``, ``_result_type``, ``_error``,
      ``_stop_reason``, ``_answer_text``, ``_input_tokens``, ``_output_tokens``, ``_cost_usd``,
      ``_batch_id``; all or nothing.

    Every other argument is :class:`BatchJobOperator`'s (``default_params`` with the model and
    ``max_tokens``, ``max_cost_usd``, ``dry_run``, ``max_retry_rounds``, ``deferrable``...).

    :param table_path: the input table (templated).
    :param destination: the output dataset's folder (templated).
    :param prompt: the user turn, a Jinja template over the row.
    :param system: the system prompt, a Jinja template over the row.
    :param build_request: ``row -> Messages params`` instead of the templates.
    :param prompt_vars: extra template variables (templated), e.g. ``{"day": "{{ ds }}"}``.
    :param id_column: the rows' key column; None: the row position.
    :param output_schema: JSON Schema dict or Pydantic model class of the answer.
    :param answer_prefix: put before every answer column's name (to keep them apart from input columns).
    :param retry_invalid_output: send answers that break the schema again in the retry rounds.
    :param table_path_conn_id: connection of the input table's object store.

    OpenLineage (with ``apache-airflow-providers-openlineage``): ``table_path`` is the input and
    ``destination`` the output, with a ``schema`` facet of the published columns; the ``anthropix_batch``
    run facet is the job's (docs/lineage.md).
    """

    template_fields: Sequence[str] = (
        *(f for f in BatchJobOperator.template_fields if f != "requests_path" and f != "requests_path_conn_id"),
        "table_path",
        "table_path_conn_id",
        "prompt_vars",
    )
    template_fields_renderers = {"default_params": "json", "prompt_vars": "json"}
    ui_color = "#d9c9e3"

    def __init__(
        self,
        *,
        table_path: str | ObjectStoragePath,
        destination: str | ObjectStoragePath,
        prompt: str | None = None,
        system: str | None = None,
        build_request: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
        prompt_vars: dict[str, Any] | None = None,
        id_column: str | None = None,
        output_schema: Mapping[str, Any] | type | None = None,
        answer_prefix: str = "",
        retry_invalid_output: bool = False,
        table_path_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_anthropix.table.render import RowTemplates
        from airflow_provider_anthropix.table.schema import resolve_schema

        if "requests_path" in kwargs:
            raise TypeError("BatchTableOperator renders its requests from table_path; requests_path is not an argument")
        if "outlets" not in kwargs:
            uri = static_asset_uri(destination)
            if uri is not None:
                kwargs["outlets"] = [Asset(uri=uri)]
        kwargs.setdefault("format", "jsonl")
        super().__init__(requests_path="", destination=destination, **kwargs)
        # Checked while the DAG is parsed, not after the rows are read.
        self.templates = RowTemplates(prompt=prompt, system=system, build_request=build_request)
        self.output_schema = resolve_schema(output_schema) if output_schema is not None else None
        self.table_path = table_path
        self.table_path_conn_id = table_path_conn_id
        self.prompt = prompt
        self.system = system
        self.build_request = build_request
        self.prompt_vars = prompt_vars or {}
        self.id_column = id_column
        self.answer_prefix = answer_prefix
        self.retry_invalid_output = retry_invalid_output
        if retry_invalid_output and self.output_schema is None:
            raise ValueError("retry_invalid_output needs output_schema (without one no answer is invalid)")
        if self.output_schema is not None:
            extra = dict((self.default_params or {}).get("output_config") or {})
            extra["format"] = {"type": "json_schema", "schema": self.output_schema}
            self.default_params = {**(self.default_params or {}), "output_config": extra}
        self.settings_template = _with_scan(self.settings_template, retry_invalid_output)

    # -- the rows ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_anthropix.table.memory import hand_back_memory

        self._render_rows(context)
        hand_back_memory()  # the rows are written and dropped: the job's split starts from what the task held before
        return self._advance(context)

    def _table_folder(self) -> ObjectStoragePath:
        from airflow_provider_anthropix.operators.paths import storage_path

        destination = storage_path(self.destination, self.destination_conn_id, "destination")
        return destination / TABLE_FOLDER

    def _point_job_at_rendered_rows(self) -> ObjectStoragePath:
        """The job's ``requests_path`` is the rendered file (the same path on every try, so the same job)."""
        folder = self._table_folder()
        self.requests_path = str(folder / f"requests{self._suffix()}.jsonl")
        self.requests_path_conn_id = self.destination_conn_id
        return folder

    def _suffix(self) -> str:
        """A dry run renders beside a real job, never over its files."""
        return DRY_RUN_SUFFIX if self.cost_options.dry_run else ""

    def _advance(self, context: Context) -> dict[str, Any]:
        folder = self._point_job_at_rendered_rows()
        summary = super()._advance(context)
        # Done (or a dry run's estimate): the rendered rows are in the job's shards; the job keeps what it needs.
        for name in (f"requests{self._suffix()}.jsonl", f"render{self._suffix()}.json"):
            (folder / name).unlink(missing_ok=True)
        return summary

    def _defer(self, step: Wait) -> None:
        """Defer, leaving behind the memory the render and the split used (``dags test`` resumes in this process)."""
        from airflow_provider_anthropix.table.memory import hand_back_memory

        hand_back_memory()
        super()._defer(step)

    def _poll_until_something_ends(self, step: Wait) -> None:
        """Wait in the worker (``deferrable=False``), for hours maybe: not holding what the render and the split used."""
        from airflow_provider_anthropix.table.memory import hand_back_memory

        hand_back_memory()
        super()._poll_until_something_ends(step)

    def _render_rows(self, context: Context) -> None:
        """Read the table, check templates, keys and columns, and write the requests (nothing is sent yet)."""
        from airflow_provider_anthropix.api.errors import AnthropixError
        from airflow_provider_anthropix.io.publish import OBJECT_STORE_PROTOCOLS, protocol_of
        from airflow_provider_anthropix.io.shards import fingerprint_inputs
        from airflow_provider_anthropix.operators.paths import storage_path
        from airflow_provider_anthropix.table.answers import AnswerLayout, check_column_names
        from airflow_provider_anthropix.table.render import RowRenderer, RowTemplates
        from airflow_provider_anthropix.table.source import SLICE_BYTES, TableError, iter_slices, table_files

        folder = self._point_job_at_rendered_rows()
        table_path = storage_path(self.table_path, self.table_path_conn_id, "table_path")
        templates = RowTemplates(
            prompt=self.prompt, system=self.system, build_request=self.build_request, prompt_vars=dict(self.prompt_vars)
        )
        layout = AnswerLayout(self.output_schema, self.answer_prefix)
        target = (
            ObjectStoragePath(str(self.requests_path), conn_id=self.destination_conn_id)
            if self.destination_conn_id
            else ObjectStoragePath(str(self.requests_path))
        )
        if protocol_of(folder) not in OBJECT_STORE_PROTOCOLS:  # a file system needs the folder; a bucket does not
            folder.mkdir(parents=True, exist_ok=True)
        try:
            files = table_files(table_path)
            fingerprint = fingerprint_inputs(files)
            renderer = RowRenderer(templates, id_column=self.id_column)
            slices = iter_slices(files, max_bytes=SLICE_BYTES)  # a few MB at a time: rows are rendered one by one
            first = next(slices, None)
            if first is None:
                raise TableError(f"table_path {table_path} has no rows")
            check_column_names(first.schema.names, layout)  # before any row is rendered
            with target.open("wb") as out:
                summary = renderer.render(itertools.chain([first], slices), out)
        except AnthropixError as exc:
            target.unlink(missing_ok=True)
            raise AirflowFailException(f"{exc}") from None
        facts = {
            "table_path": str(table_path),
            "input_fingerprint": fingerprint,
            "rows": summary.rows,
            "input_columns": summary.columns,
            "id_column": self.id_column,
            "derived_ids": summary.derived_ids,
        }
        (folder / f"render{self._suffix()}.json").write_text(json.dumps(facts))
        self.log.info(
            "Rendered %s rows of %s into requests (%s derived custom_ids)",
            f"{summary.rows:,}",
            table_path,
            f"{summary.derived_ids:,}",
        )

    def _render_facts(self) -> dict[str, Any]:
        """What the render wrote down, read back as untrusted: a fact that is not the right shape is refused."""
        path = self._table_folder() / f"render{self._suffix()}.json"
        try:
            facts = json.loads(path.read_text()[: 16 << 20])
        except (OSError, ValueError) as exc:
            raise AirflowFailException(
                f"{path} cannot be read ({type(exc).__name__}); clear the task to render again"
            ) from None
        if (
            not isinstance(facts, dict)
            or not isinstance(facts.get("rows"), int)
            or not isinstance(facts.get("input_fingerprint"), list)
            or not isinstance(facts.get("input_columns"), list)
            or facts.get("id_column") != self.id_column
        ):
            raise AirflowFailException(f"{path} is not what this task wrote; clear the task to render again")
        return facts

    # -- lineage -------------------------------------------------------------------------------

    def _lineage_paths(self) -> tuple[list[tuple[Any, str | None]], list[tuple[Any, str | None]]]:
        return [(self.table_path, self.table_path_conn_id)], [(self.destination, self.destination_conn_id)]

    def _output_fields(self, complete: bool) -> list[tuple[str, str]] | None:
        """The published dataset's columns, read from its first file's footer (only once it is published)."""
        from airflow_provider_anthropix.lineage import parquet_fields

        if not complete or self.observed.dry_run:
            return None
        try:
            import pyarrow.parquet as pq

            from airflow_provider_anthropix.operators.paths import storage_path

            first = storage_path(self.destination, self.destination_conn_id, "destination") / "part-00000.parquet"
            with first.open("rb") as handle:
                return parquet_fields(pq.read_schema(handle))
        except Exception as exc:  # lineage never fails the task; the event goes out without columns
            self.log.warning("No schema facet for the table's lineage: %s", exc)
            return None

    # -- the job's files, with the table's export ----------------------------------------------

    def _workspace(
        self,
        root: ObjectStoragePath,
        requests_path: ObjectStoragePath,
        destination: ObjectStoragePath,
        plan: PlanOptions,
    ) -> JobWorkspace:
        from airflow_provider_anthropix.operators.paths import storage_path
        from airflow_provider_anthropix.table.answers import AnswerLayout
        from airflow_provider_anthropix.table.workspace import TableWorkspace

        facts = self._render_facts()
        return TableWorkspace(
            root,
            table_path=storage_path(self.table_path, self.table_path_conn_id, "table_path"),
            id_column=self.id_column,
            layout=AnswerLayout(self.output_schema, self.answer_prefix),
            retry_invalid_output=self.retry_invalid_output,
            price_table=self.cost_options.price_table,
            redact=self.client_config().redactor(),
            table_manifest={
                "table_path": facts.get("table_path"),
                "input_fingerprint": facts["input_fingerprint"],
                "input_columns": facts["input_columns"],
                "id_column": self.id_column,
                "derived_ids": facts.get("derived_ids"),
                "output_schema": self.output_schema,
            },
            **self._workspace_arguments(requests_path, destination, plan),
        )


def _with_scan(settings: Any, scan: bool) -> Any:
    from dataclasses import replace

    return replace(settings, scan_succeeded=scan)

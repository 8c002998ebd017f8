"""BatchJobOperator: any number of prompts, every answer, one merged result, as one task.

The operator is an adapter: it turns its arguments into a
:class:`~airflow_provider_anthropix.workflow.job.JobRunner` over the job's working folder in
object storage, calls ``advance()``, defers to a
:class:`~airflow_provider_anthropix.triggers.job.BatchesEndedTrigger` while batches process,
and turns the workflow's errors into Airflow's. All state is in the working folder (the
journal ``job.json``, shard files, id lists), never on the worker, so the task can resume on
another machine after each deferral or crash, on Airflow 3.2 and 3.3 alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_anthropix.api.limits import MAX_BODY_BYTES, MAX_REQUESTS, check_batch_limits
from airflow_provider_anthropix.cost.budget import DEFAULT_SAMPLE_SIZE
from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID
from airflow_provider_anthropix.links import AnthropicConsoleBatchesLink, BatchResultsLink
from airflow_provider_anthropix.mixins import AnthropixHookMixin
from airflow_provider_anthropix.operators.estimate import CostOptions
from airflow_provider_anthropix.operators.observe import ObservedOperator
from airflow_provider_anthropix.workflow.outcome import RETRYABLE_ERROR_TYPES

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_anthropix.api.plan import PlanOptions
    from airflow_provider_anthropix.cost.estimate import CostTally
    from airflow_provider_anthropix.cost.pricing import PriceTable
    from airflow_provider_anthropix.io.job_files import JobWorkspace
    from airflow_provider_anthropix.workflow.job import (
        Done,
        JobRunner,
        JobState,
        RoundBudget,
        RoundState,
        ShardState,
        Wait,
    )


class _DryRunDone(Exception):
    """Raised through the runner by a dry run once the estimate is made; carries the task's return value."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__("dry run")
        self.summary = summary


#: The working folder's name under the destination when ``work_prefix`` is not given.
WORK_FOLDER = "_anthropix_job"


class BatchJobOperator(AnthropixHookMixin, ObservedOperator, BaseOperator):
    """Run a job larger than one batch: split, create, wait, retry what failed, export one merged result.

    - **Split**: the input (a JSONL(.gz) file, a folder of them, or a glob) is validated as a
      whole (custom_ids unique across the job) and cut by request count and encoded size, in
      input order, into shard files under the working folder. Nothing is sent until every
      request has passed.
    - **Create** each shard once (the create-once ledger; one create in flight at a time, the
      job's own batch ids never adopted for another shard), at most ``max_batches_in_flight``
      processing at once.
    - **Wait** in the triggerer on all batches in flight with one trigger (``deferrable=True``)
      or by polling in the worker.
    - **Retry rounds**: requests that errored with a type in ``retry_error_types`` (or expired,
      with ``retry_expired``) are sent again, with their original params, up to ``max_retry_rounds``.
    - **Export** one line per custom_id (its last attempt, byte for byte) to ``destination``,
      all or nothing, with one ``_manifest.json`` listing every batch and round; then apply
      ``max_errored_ratio`` (the results land first, then the gate).

    **Identity and re-runs**: a job is, by default, its destination, its ``requests_path`` and the
    options that shape its shards (``default_params``, both batch limits, the API version), not
    the DAG run: any run for the same date with the same input (a manual re-run, a backfill, a
    cleared or deleted run) resumes or exports again the same job, creating no batch. A changed
    input (other bytes) under the same identity is a new job: it replaces the destination's
    results all or nothing, and says so. ``job_key`` (templated, e.g. ``"{{ run_id }}"``) replaces
    the identity; then a changed input is refused instead.

    The job's state is in ``work_prefix`` (default: ``<destination>/_anthropix_job/<job key>/``):
    a retry, a cleared task or a new worker resumes where the job stood. What stays there is
    described in docs/jobs.md ("Working folder"): after a successful export only the journal
    and id lists (a few KB) stay, and folders of earlier jobs of the same destination that
    exported or sent nothing are removed; a dry run leaves nothing.

    :param requests_path: request file, folder or glob (templated); ``{"custom_id", "params"}`` per line.
    :param destination: folder for the merged results (templated).
    :param default_params: merged under every request's params (templated).
    :param max_requests_per_batch: most requests per batch (API limit 100,000).
    :param max_bytes_per_batch: largest create body per batch (API limit 256 MB).
    :param max_batches_in_flight: batches processing at once.
    :param retry_error_types: errored result types sent again (``invalid_request_error`` never is).
    :param retry_expired: send expired requests again.
    :param max_retry_rounds: rounds after the first.
    :param format: ``jsonl`` or ``parquet``, as :class:`FetchBatchResultsOperator`.
    :param compression: as :class:`FetchBatchResultsOperator`.
    :param split_by_result_type: one object per outcome.
    :param max_errored_ratio: after landing, fail when the share of errored requests is above it (None: never).
    :param poll_interval: seconds between polls.
    :param timeout: seconds from planning to give up, kept in the journal (Airflow's deferral timeout
        restarts at every deferral; this does not). The default covers a 24 h batch per round.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``, like every
        waiting task here). A job waits up to a day per round: without deferral it holds a worker
        slot all that time, and the task logs a warning saying so.
    :param work_prefix: the job's working folder (templated; default under the destination, named by the job key).
    :param job_key: the job's identity (templated), instead of destination + input + options.
    :param keep_work_files: keep the shard files and scanned results copies after a successful export
        (they are removed only then: a failed job leaves them behind for its next try).
    :param anthropix_conn_id: the Anthropix connection.
    :param requests_path_conn_id: connection of the input's object store.
    :param destination_conn_id: connection of the destination's (and working folder's) store.
    :param price_table: per-model prices for the manifest's cost.
    :param lost_response_checks: looks for the batch of a create whose answer was lost (0: never adopt).
    :param max_cost_usd: budget in US dollars at batch price for the whole job (templated). Checked before the
        first create (the first round's estimate on ``budget_basis``; over it, nothing is sent and the task fails
        without retries) and before every retry round (the actual cost of the batches already ended plus the
        round's estimate; over it, the round is not sent: the results land, then the task fails naming the
        requests not sent again).
    :param budget_basis: ``worst_case`` or ``expected`` (see :class:`CreateBatchOperator`).
    :param dry_run: split, validate, check models and estimate; send nothing; return the estimate.
    :param estimate_sample_size: requests per model whose tokens are counted exactly.
    :param check_models: check model names against the API's model list first.

    OpenLineage (with ``apache-airflow-providers-openlineage``): ``requests_path`` is the input and
    ``destination`` the output (with a ``schema`` facet for Parquet); the ``anthropix_batch`` run facet
    holds the job's batch ids, rounds, counts by outcome, tokens and cost (docs/lineage.md).
    """

    template_fields: Sequence[str] = (
        "requests_path",
        "destination",
        "default_params",
        "work_prefix",
        "job_key",
        "anthropix_conn_id",
        "requests_path_conn_id",
        "destination_conn_id",
        "max_cost_usd",
    )
    template_fields_renderers = {"default_params": "json"}
    ui_color = "#e3c9b3"
    operator_extra_links = (AnthropicConsoleBatchesLink(), BatchResultsLink())

    def __init__(
        self,
        *,
        requests_path: str | ObjectStoragePath,
        destination: str | ObjectStoragePath,
        default_params: dict[str, Any] | None = None,
        max_requests_per_batch: int = MAX_REQUESTS,
        max_bytes_per_batch: int = MAX_BODY_BYTES,
        max_batches_in_flight: int = 10,
        retry_error_types: Sequence[str] = RETRYABLE_ERROR_TYPES,
        retry_expired: bool = True,
        max_retry_rounds: int = 2,
        format: str = "jsonl",
        compression: str | None = None,
        split_by_result_type: bool = False,
        max_errored_ratio: float | None = 0.0,
        poll_interval: float = 60.0,
        timeout: timedelta | float = timedelta(hours=48),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        work_prefix: str | None = None,
        job_key: str | None = None,
        keep_work_files: bool = False,
        anthropix_conn_id: str = DEFAULT_CONN_ID,
        requests_path_conn_id: str | None = None,
        destination_conn_id: str | None = None,
        price_table: PriceTable | None = None,
        lost_response_checks: int = 3,
        max_cost_usd: float | str | None = None,
        budget_basis: str = "worst_case",
        dry_run: bool = False,
        estimate_sample_size: int = DEFAULT_SAMPLE_SIZE,
        check_models: bool = True,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_anthropix.io.export import ExportOptions
        from airflow_provider_anthropix.workflow.job import JobSettings

        super().__init__(**kwargs)
        self.cost_options = CostOptions(
            budget_basis=budget_basis,
            dry_run=dry_run,
            sample_size=estimate_sample_size,
            check_models=check_models,
            price_table=price_table,
        )
        self.max_cost_usd = max_cost_usd
        check_batch_limits(max_requests_per_batch, max_bytes_per_batch)
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        # Options are checked while the DAG is parsed, not hours later.
        self.export_options = ExportOptions(
            output_format=format,
            compression=compression,
            split_by_result_type=split_by_result_type,
            price_table=price_table,
        )
        self.settings_template = JobSettings(
            max_batches_in_flight=max_batches_in_flight,
            retry_error_types=tuple(retry_error_types),
            retry_expired=retry_expired,
            max_retry_rounds=max_retry_rounds,
            timeout=seconds,
            max_errored_ratio=max_errored_ratio,
            keep_work_files=keep_work_files,
        )
        self.requests_path = requests_path
        self.destination = destination
        self.default_params = default_params
        self.max_requests_per_batch = max_requests_per_batch
        self.max_bytes_per_batch = max_bytes_per_batch
        self.poll_interval = float(poll_interval)
        self.job_timeout = seconds
        self.deferrable = deferrable
        self.work_prefix = work_prefix
        self.job_key = job_key
        self.anthropix_conn_id = anthropix_conn_id
        self.requests_path_conn_id = requests_path_conn_id
        self.destination_conn_id = destination_conn_id
        self.lost_response_checks = max(0, lost_response_checks)
        self._kill_requested = False
        self._job_folders: tuple[ObjectStoragePath, str] | None = None

    # -- entry points -----------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        return self._advance(context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow_provider_anthropix.triggers.deferral import read_event
        from airflow_provider_anthropix.workflow.events import parse_batches_event

        status, _, message = read_event(parse_batches_event, event)
        if status == "error":
            # A permanent polling failure (401, 404...) or a long outage: the job's state is safe; a retry resumes.
            raise AirflowException(f"waiting for the job's batches failed: {message}")
        # success or timeout: the job itself decides (a passed deadline fails there, with the details).
        return self._advance(context)

    def _advance(self, context: Context) -> dict[str, Any]:
        from airflow_provider_anthropix.operators.attribution import push_job_batches
        from airflow_provider_anthropix.operators.estimate import push_estimate
        from airflow_provider_anthropix.workflow.job import Done

        runner = self._runner(context)
        while True:
            try:
                step = self._step(runner)
            except _DryRunDone as done:
                self.observed.add_job_summary(done.summary)
                return done.summary
            finally:
                for batch_id in sorted(runner.state.known_batch_ids() if runner.state is not None else ()):
                    self.observed.add_batch(batch_id)
            if runner.state is not None:  # for the Batches page: which batches this task made
                push_job_batches(context, runner.state.known_batch_ids(), runner.state.estimate)
            if isinstance(step, Done) and runner.state is not None and runner.state.estimate:
                push_estimate(context, runner.state.estimate)
            if isinstance(step, Done):
                self._sweep_earlier_jobs()
                return step.summary
            if self.deferrable:
                self._defer(step)
            self._poll_until_something_ends(step)

    def _step(self, runner: JobRunner) -> Wait | Done:
        from airflow_provider_anthropix.api.errors import AnthropixError, BatchValidationError

        try:
            return runner.advance()
        except BatchValidationError as exc:
            raise AirflowFailException(
                f"{exc}\n(validated with the rules of API version {self.client_config().anthropic_version} of "
                f"connection {self.anthropix_conn_id!r}; nothing was sent)"
            ) from None
        except AnthropixError as exc:  # the API's, the job's, the files': one mapping (failures.py)
            raise self.api_failure(exc, "the batch job") from None

    def _defer(self, step: Wait) -> None:
        from airflow_provider_anthropix.triggers.deferral import defer_to
        from airflow_provider_anthropix.triggers.job import BatchesEndedTrigger
        from airflow_provider_anthropix.triggers.polling import deadline_epoch

        deadline = deadline_epoch(step.deadline)
        trigger = BatchesEndedTrigger(
            step.batch_ids,
            self.anthropix_conn_id,
            wait_for=step.wait_for,
            job_progress=step.progress.to_dict(),
            poll_interval=self.poll_interval,
            deadline=step.deadline,
            first_poll_delay=self.poll_interval,  # the job has just looked at its batches
        )
        remaining = max(60.0, deadline - time.time()) if deadline is not None else 0.0
        defer_to(self, trigger, wait=remaining, poll_interval=self.poll_interval)

    def _poll_until_something_ends(self, step: Wait) -> None:
        """Without deferral: sleep in the worker until one of the batches ends (or any poll fails)."""
        from airflow_provider_anthropix.api.errors import AnthropixError

        self.log.warning(
            "Waiting for %d batch(es) in this worker (deferrable=False): the task holds a worker slot until "
            "they end, up to a day per round. Pass deferrable=True, or set [operators] default_deferrable, "
            "to wait in the triggerer instead.",
            len(step.batch_ids),
        )
        pending = set(step.batch_ids)
        while True:
            time.sleep(self.poll_interval)
            try:
                ended = [b for b in pending if self.hook.get_batch(b).is_ended]
            except AnthropixError as exc:
                self.log.warning("Polling the job's batches failed (%s); trying again", exc)
                continue
            if ended and (step.wait_for == "any" or len(ended) == len(pending)):
                return

    # -- building the runner -------------------------------------------------------------------

    def _identity(self, context: Context) -> dict[str, str]:
        ti = context["ti"]
        return {
            "dag_id": str(ti.dag_id),
            "task_id": str(ti.task_id),
            "run_id": str(ti.run_id),
            "map_index": str(getattr(ti, "map_index", -1)),
        }

    def _plan_options(self, api_version: str) -> PlanOptions:
        from airflow_provider_anthropix.api.plan import PlanOptions

        return PlanOptions(
            default_params=self.default_params,
            max_requests_per_batch=self.max_requests_per_batch,
            max_bytes_per_batch=self.max_bytes_per_batch,
            api_version=api_version,
        )

    def _runner(self, context: Context) -> JobRunner:
        from airflow_provider_anthropix.io.publish import DestinationError, check_destination_writable, destination_uri
        from airflow_provider_anthropix.operators.paths import storage_path
        from airflow_provider_anthropix.workflow.job import JobRunner, job_key
        from airflow_provider_anthropix.workflow.ledger import RecoverySettings

        self._kill_requested = False
        config = self.client_config()
        destination = storage_path(self.destination, self.destination_conn_id, "destination")
        try:
            check_destination_writable(destination)  # before the split writes shards, or anything is sent
        except DestinationError as exc:
            raise AirflowFailException(f"destination: {exc}; nothing was sent") from None
        requests_path = storage_path(self.requests_path, self.requests_path_conn_id, "requests_path")
        plan = self._plan_options(config.anthropic_version)
        key = job_key(
            destination=destination_uri(destination),
            requests_path=destination_uri(requests_path),
            plan=plan,
            given=str(self.job_key) if self.job_key else None,
        )
        if self.cost_options.dry_run:
            # A folder of its own: a dry run must never resume (and so send or export) a real job.
            key = f"{key}-dry-run"
        if self.work_prefix:
            root = storage_path(self.work_prefix, self.destination_conn_id, "work_prefix")
        else:
            root = destination / WORK_FOLDER / key
        self._job_folders = None if self.work_prefix else (destination / WORK_FOLDER, key)
        settings = replace(
            self.settings_template,
            recovery=RecoverySettings(
                checks=self.lost_response_checks,
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
            ),
            plan=plan,
            fixed_identity=bool(self.job_key or self.work_prefix),
        )
        workspace = self._workspace(root, requests_path, destination, plan)
        self.log.info("Job %s, working folder: %s", key, workspace.uri)

        def before_first_create(state: JobState) -> dict[str, Any] | None:
            return self._estimate(context, workspace, state, destination)

        def observe(event: str) -> None:
            if event == "exported":  # published: the manifest has the counts, tokens, cost and bytes
                from airflow_provider_anthropix.io.publish import read_manifest

                try:
                    manifest = read_manifest(destination)
                except (OSError, ValueError) as exc:
                    self.log.warning("Could not read back the manifest for metrics and lineage: %s", exc)
                    return
                self._observe_export(manifest, f"{destination_uri(destination).rstrip('/')}/_manifest.json")
            else:
                self._observe_job_event(event)

        def before_retry_round(state: JobState, following: RoundState) -> RoundBudget | None:
            return self._retry_round_budget(workspace, state, following)

        # Without a budget a round end reads only the results it must (those with errors or expiries).
        gate = before_retry_round if self._budget() is not None else None

        return JobRunner(
            self.hook,
            workspace,
            settings,
            key=key,
            identity=self._identity(context),
            log=self.log,
            before_first_create=before_first_create,
            before_retry_round=gate,
            observe=observe,
        )

    def _workspace(
        self,
        root: ObjectStoragePath,
        requests_path: ObjectStoragePath,
        destination: ObjectStoragePath,
        plan: PlanOptions,
    ) -> JobWorkspace:
        """The job's files, input and export (a subclass exports its own way: the table operator)."""
        from airflow_provider_anthropix.io.job_files import JobWorkspace

        return JobWorkspace(root, **self._workspace_arguments(requests_path, destination, plan))

    def _workspace_arguments(
        self, requests_path: ObjectStoragePath, destination: ObjectStoragePath, plan: PlanOptions
    ) -> dict[str, Any]:
        """What every job workspace is given, whichever export it does."""
        return {
            "requests_path": requests_path,
            "destination": destination,
            "plan": plan,
            "export_options": self.export_options,
            "logger": self.log,
            "should_stop": lambda: self._kill_requested,
        }

    def _sweep_earlier_jobs(self) -> None:
        """After an export: remove the folders of this destination's earlier jobs that are over (docs/jobs.md)."""
        from airflow_provider_anthropix.io.job_files import sweep_other_jobs

        if self._job_folders is not None:
            parent, key = self._job_folders
            sweep_other_jobs(parent, key, self.log)

    def _budget(self) -> float | None:
        from airflow_provider_anthropix.cost.estimate import CostError, parse_budget

        try:
            return parse_budget(self.max_cost_usd)
        except CostError as exc:
            raise AirflowFailException(str(exc)) from None

    def _tally(self, workspace: Any, shards: Sequence[ShardState]) -> CostTally:
        """The estimate's tally of the requests in ``shards`` (the shard files, as they will be sent)."""
        from airflow_provider_anthropix.cost.estimate import shared_prefix
        from airflow_provider_anthropix.io.estimate_inputs import prefix_bytes, tally_shards

        tally = self.cost_options.tally()
        prefix = shared_prefix(self.default_params)
        openers = [(s.name, lambda name=s.name: workspace.open_read(name)) for s in shards]
        tally_shards(openers, tally, prefix=prefix_bytes(prefix.keys if prefix else (), self.default_params))
        return tally

    def _retry_round_budget(self, workspace: Any, state: JobState, following: RoundState) -> RoundBudget | None:
        """The budget gate of a retry round: actual cost of the ended batches + the round's estimate <= max_cost_usd."""
        from airflow_provider_anthropix.api.errors import AnthropixError
        from airflow_provider_anthropix.cost.estimate import estimate_cost, shared_prefix
        from airflow_provider_anthropix.cost.pricing import UnknownModelPrice, model_price
        from airflow_provider_anthropix.workflow.job import RoundBudget

        budget = self._budget()
        if budget is None:
            return None
        table = self.cost_options.price_table
        spent, unpriced = spent_usd(state, table)
        tally = self._tally(workspace, following.shards)
        try:
            estimate = estimate_cost(
                tally,
                self.hook.count_tokens,
                lambda m: model_price(m, table),
                prefix=shared_prefix(self.default_params),
            )
        except UnknownModelPrice as exc:
            raise AirflowFailException(f"{exc}; the retry round was not sent") from None
        except AnthropixError as exc:
            raise self.api_failure(exc, "estimating the retry round's cost") from None
        basis = self.cost_options.budget_basis
        round_cost = estimate.cost(basis)
        allowed = spent + round_cost <= budget
        self.log.info(
            "Retry round %d: ended batches cost $%.4f%s, the round's %s estimate $%.4f: %s max_cost_usd $%.4f",
            following.index,
            spent,
            f" (models without a price: {', '.join(unpriced)})" if unpriced else "",
            basis.replace("_", " "),
            round_cost,
            "within" if allowed else "over",
            budget,
        )
        return RoundBudget(
            allowed=allowed, spent_usd=spent, round_estimate_usd=round_cost, budget_usd=budget, basis=basis
        )

    def _estimate(
        self, context: Context, workspace: Any, state: JobState, destination: ObjectStoragePath
    ) -> dict[str, Any] | None:
        """Planned, nothing sent: model check, estimate, budget gate (and the end of a dry run)."""
        from airflow_provider_anthropix.operators.estimate import push_estimate, run_estimate

        estimate = run_estimate(self, self._tally(workspace, state.rounds[0].shards), learn_from=destination)
        figures = estimate.to_dict() if estimate is not None else None
        self._observe_estimate(figures, sent=not self.cost_options.dry_run)
        if self.cost_options.dry_run:
            if figures is not None:
                push_estimate(context, figures)
            workspace.remove_job()  # nothing was sent: a dry run leaves no working folder behind
            self.log.info(
                "dry_run: %s requests in %d batch(es) planned and estimated; nothing was sent",
                f"{state.total_requests:,}",
                len(state.rounds[0].shards),
            )
            raise _DryRunDone(
                {
                    "dry_run": True,
                    "requests": state.total_requests,
                    "batches": len(state.rounds[0].shards),
                    "work_prefix": workspace.uri,
                    "estimate": figures,
                }
            )
        return figures

    def _lineage_paths(self) -> tuple[list[tuple[Any, str | None]], list[tuple[Any, str | None]]]:
        return [(self.requests_path, self.requests_path_conn_id)], [(self.destination, self.destination_conn_id)]

    def _output_fields(self, complete: bool) -> list[tuple[str, str]] | None:
        from airflow_provider_anthropix.operators.fetch import results_parquet_fields

        return results_parquet_fields(self.export_options.output_format)

    def on_kill(self) -> None:
        """Stop an export at its next chunk (nothing is published); batches in flight are left running."""
        self._kill_requested = True


def spent_usd(state: JobState, table: PriceTable | None) -> tuple[float, list[str]]:
    """What the job's scanned batches cost at batch price (their results' usage), and the models without a price."""
    from airflow_provider_anthropix.cost.pricing import TokenTotals, usage_cost

    by_model: dict[str, TokenTotals] = {}
    for _, shard in state.all_shards():
        for model, tokens in (shard.tokens or {}).items():
            totals = by_model.setdefault(model, TokenTotals())
            totals.add(
                TokenTotals(
                    **{
                        k: int(tokens.get(k, 0))
                        for k in ("input", "output", "cache_creation_input", "cache_read_input")
                    }
                )
            )
    cost = usage_cost(by_model, table)
    return cost.usd, cost.unpriced_models

"""CreateBatchOperator: validate a batch locally, stream it to the API, never create it twice.

The operator is thin; the work lives in plain code that can be tested alone: reading and
validating requests into a spooled body is :mod:`airflow_provider_anthropix.io.requests_file`,
and sending it at most once is the create-once ledger,
:class:`airflow_provider_anthropix.workflow.ledger.CreateLedger`.

Crash safety (Airflow 3.3+): the ledger keeps its attempt record and the batch id in the task
state store, which survives retries of a task instance. A retry that finds a batch id reuses
it; one that finds only an attempt (the worker died mid-create) looks the batch up instead of
paying twice.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_provider_anthropix.cost.budget import DEFAULT_SAMPLE_SIZE
from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID
from airflow_provider_anthropix.links import AnthropicConsoleLink
from airflow_provider_anthropix.mixins import AnthropixHookMixin
from airflow_provider_anthropix.operators.estimate import XCOM_KEY, CostOptions
from airflow_provider_anthropix.operators.observe import ObservedOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_anthropix.cost.estimate import CostTally
    from airflow_provider_anthropix.io.requests_file import SpooledBatch
    from airflow_provider_anthropix.workflow.ledger import CreateFailed, CreateLedger
    from airflow_provider_anthropix.workflow.store import ForgivingStore

#: Task state store keys (renaming them breaks retries of tasks in flight during an upgrade).
STATE_BATCH_ID = "anthropix_batch_id"
STATE_ATTEMPT = "anthropix_create_attempt"

_warned_no_state_store = False


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{size} B"


# -- the operator -------------------------------------------------------------------------------


class CreateBatchOperator(AnthropixHookMixin, ObservedOperator, BaseOperator):
    """Submit one Message Batch from a list of requests or a JSONL file; returns the batch id.

    Everything the API would reject is caught before anything is sent: the task then fails
    without retries, naming file, line and ``custom_id`` of the first problems. The body is
    encoded once into a temporary file and streamed from there, so a 100,000-request batch
    needs a few MB of memory, not the GBs a list of dicts would.

    On Airflow 3.3+ the create is crash-safe: the batch id is recorded in the task state
    store as soon as the API returns it, and a retry of the task reuses that batch instead of
    creating (and paying for) a second one. A create whose answer was lost is not sent again
    blindly: the operator lists the batches created during the attempt and adopts the one
    with the same request count, if exactly one exists.

    :param requests: a list of ``{"custom_id", "params"}`` dicts (or an XCom of one, or its JSON text).
    :param requests_path: a JSONL file of such dicts, one per line, as ``ObjectStoragePath`` or URI
        (``file://``, ``s3://``, ... or a local path); ``.gz`` files are decompressed on the fly.
    :param default_params: merged under each request's ``params`` (``model``, ``max_tokens``, ``system``, ...).
    :param anthropix_conn_id: the Airflow connection (its ``anthropic_version`` sets the validation rules).
    :param requests_path_conn_id: connection for the object store holding ``requests_path``.
    :param cancel_on_kill: cancel the batch when the task is killed after creating it.
    :param max_problems_shown: how many validation problems the error lists before counting the rest.
    :param lost_response_checks: how many times to look for the batch of a create whose answer was lost;
        0 never adopts a batch: the task fails without retries and says what to check.
    :param lost_response_check_interval: seconds between those looks.
    :param clock_skew: seconds of tolerance between this worker's clock and the API's ``created_at``.
    :param results_destination: where the results will go (templated; the fetch's ``destination``):
        checked before anything is sent (scheme, filesystem installed, a probe object written and
        deleted), so a destination that cannot take the results fails before the batch is paid for.
    :param results_destination_conn_id: connection for that store (the fetch's ``destination_conn_id``).
    :param max_cost_usd: budget in US dollars at batch price (templated): over it, the task fails without
        retries before anything is sent, naming the figures and the three most expensive requests.
    :param budget_basis: what the budget is compared with: ``worst_case`` (every ``max_tokens`` used, the
        input at its error bound, no cache hit) or ``expected``.
    :param dry_run: validate, check models and estimate, then skip the task: nothing is sent, and the
        downstream tasks that need a batch id are skipped too. The estimate is in XCom key ``estimate``.
    :param estimate_sample_size: requests per model whose input tokens are counted exactly
        (``POST /v1/messages/count_tokens``); a batch that small is counted whole.
    :param check_models: check the model names against the API's model list (``GET /v1/models``, cached
        per connection and day) before sending; False for a model the list does not show.
    :param price_table: per-model prices for the estimate (see :mod:`airflow_provider_anthropix.cost.pricing`).

    OpenLineage (with ``apache-airflow-providers-openlineage``): ``requests_path`` is the input and
    ``results_destination`` the output; the ``anthropix_batch`` run facet holds the batch id, the request
    count and the estimate (docs/lineage.md).
    """

    template_fields: Sequence[str] = (
        "requests",
        "requests_path",
        "requests_path_conn_id",
        "default_params",
        "anthropix_conn_id",
        "results_destination",
        "results_destination_conn_id",
        "max_cost_usd",
    )
    template_fields_renderers = {"requests": "json", "default_params": "json"}
    ui_color = "#e8d5c4"
    operator_extra_links = (AnthropicConsoleLink(),)

    def __init__(
        self,
        *,
        requests: Any = None,
        requests_path: str | ObjectStoragePath | None = None,
        default_params: dict[str, Any] | None = None,
        anthropix_conn_id: str = DEFAULT_CONN_ID,
        requests_path_conn_id: str | None = None,
        cancel_on_kill: bool = False,
        max_problems_shown: int = 10,
        lost_response_checks: int = 3,
        lost_response_check_interval: float = 5.0,
        clock_skew: float = 60.0,
        results_destination: str | ObjectStoragePath | None = None,
        results_destination_conn_id: str | None = None,
        max_cost_usd: float | str | None = None,
        budget_basis: str = "worst_case",
        dry_run: bool = False,
        estimate_sample_size: int = DEFAULT_SAMPLE_SIZE,
        check_models: bool = True,
        price_table: Mapping[str, Mapping[str, float]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cost_options = CostOptions(
            budget_basis=budget_basis,
            dry_run=dry_run,
            sample_size=estimate_sample_size,
            check_models=check_models,
            price_table=price_table,
        )
        self.max_cost_usd = max_cost_usd
        if (requests is None) == (requests_path is None):
            raise ValueError("give exactly one of requests and requests_path")
        self.requests = requests
        self.requests_path = requests_path
        self.default_params = default_params
        self.anthropix_conn_id = anthropix_conn_id
        self.requests_path_conn_id = requests_path_conn_id
        self.cancel_on_kill = cancel_on_kill
        self.max_problems_shown = max_problems_shown
        self.lost_response_checks = max(0, lost_response_checks)
        self.lost_response_check_interval = lost_response_check_interval
        self.clock_skew = clock_skew
        self.results_destination = results_destination
        self.results_destination_conn_id = results_destination_conn_id
        self.batch_id: str | None = None

    # -- execute ------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        from airflow_provider_anthropix.workflow.ledger import CreateFailed
        from airflow_provider_anthropix.workflow.store import ForgivingStore

        store = ForgivingStore(context.get("task_state_store"), self.log)
        if not store.available:
            _warn_no_state_store(self.log)
        reused = self._reuse_recorded_batch(store)
        if reused is not None:
            return reused
        ledger = self._ledger(store)
        try:
            found = ledger.resume()
        except CreateFailed as exc:
            raise self._airflow_failure(exc) from None
        if found is not None:
            self.batch_id = found.batch_id
            self._observe_batch(found.batch_id, found.how)
            return found.batch_id

        self._check_results_destination()
        tally = self.cost_options.tally()
        spooled = self._spool(tally)
        try:
            self._estimate(context, tally)
            return self._create(ledger, spooled)
        finally:
            spooled.discard()

    def _estimate(self, context: Context, tally: CostTally) -> None:
        """Model check, estimate (logged, XCom ``estimate``), budget gate, dry run: all before anything is sent."""
        from airflow_provider_anthropix.io.publish import resolve_destination
        from airflow_provider_anthropix.operators.estimate import push_estimate, run_estimate

        destination = None
        if self.results_destination is not None:
            destination = resolve_destination(self.results_destination, self.results_destination_conn_id)
        estimate = run_estimate(self, tally, learn_from=destination)
        if estimate is not None:
            push_estimate(context, estimate.to_dict())
            self._observe_estimate(estimate.to_dict(), sent=not self.cost_options.dry_run)
        if self.cost_options.dry_run:
            raise AirflowSkipException(
                f"dry_run: {tally.requests:,} requests validated and estimated; nothing was sent "
                f"(the estimate is in XCom key {XCOM_KEY!r})"
            )

    def _reuse_recorded_batch(self, store: ForgivingStore) -> str | None:
        from airflow_provider_anthropix.api.errors import AnthropixError, NotFoundError

        recorded = store.get(STATE_BATCH_ID)
        if not recorded:
            return None
        batch_id = str(recorded)
        try:
            batch = self.hook.get_batch(batch_id)
        except NotFoundError:
            self.log.warning("Batch %s recorded by an earlier try no longer exists; creating a new one", batch_id)
            store.delete(STATE_BATCH_ID)
            return None
        except AnthropixError as exc:
            raise self.api_failure(exc, f"checking batch {batch_id} recorded by an earlier try") from None
        if batch.cancel_initiated_at is not None:
            self.log.warning("Batch %s recorded by an earlier try was canceled; creating a new one", batch_id)
            store.delete(STATE_BATCH_ID)
            return None
        self.log.info(
            "Reusing batch %s (%s, %s requests) created by an earlier try of this task; not creating a second "
            "one. To submit a new batch in this DAG run, clear the task's state store first.",
            batch.id,
            batch.processing_status,
            f"{batch.request_counts.total:,}",
        )
        self.batch_id = batch.id
        self._observe_batch(batch.id, "reused")
        return batch.id

    def _check_results_destination(self) -> None:
        """Fail without retries, before anything is sent, when the results could not be stored."""
        from airflow_provider_anthropix.io.publish import (
            DestinationError,
            check_destination_writable,
            destination_uri,
            resolve_destination,
        )

        if self.results_destination is None:
            return
        try:
            path = resolve_destination(self.results_destination, self.results_destination_conn_id)
            check_destination_writable(path)
        except DestinationError as exc:
            raise AirflowFailException(f"results_destination: {exc}; nothing was sent") from None
        self.log.info("results_destination %s is writable", destination_uri(path))

    def _spool(self, tally: CostTally) -> SpooledBatch:
        from airflow_provider_anthropix.api.errors import BatchValidationError
        from airflow_provider_anthropix.io.requests_file import iter_jsonl, spool_batch

        api_version = self.client_config().anthropic_version
        started = time.monotonic()

        def progress(seen: int, body_bytes: int) -> None:
            self.log.info("Validated %s requests (%s encoded so far)", f"{seen:,}", _human_bytes(body_bytes))

        prefix_values = _prefix_values(self.default_params)

        def observe(index: int, line: int | None, request: Any, size: int) -> None:
            params = request["params"]
            tally.observe(
                request["custom_id"],
                params["model"],
                params["max_tokens"],
                size,
                f"{where}:{line}" if line is not None else f"requests[{index}]",
                params,
                shares_prefix=bool(prefix_values) and all(params.get(k) is v for k, v in prefix_values),
            )

        if self.requests_path is not None:
            path = self._requests_path()
            items: Iterable[tuple[int | None, Any]] = iter_jsonl(path)
            file: str | None = str(path)
            source = str(path)
        else:
            items = ((None, request) for request in self._requests_list())
            file = None
            source = "the requests argument"
        where = source
        try:
            spooled = spool_batch(
                items,
                api_version=api_version,
                default_params=self.default_params,
                file=file,
                max_problems_shown=self.max_problems_shown,
                progress=progress,
                observe=observe,
            )
        except BatchValidationError as exc:
            raise AirflowFailException(
                f"{exc}\n(validated with the rules of API version {api_version}: the anthropic_version "
                f"of connection {self.anthropix_conn_id!r})"
            ) from None
        except FileNotFoundError as exc:
            raise AirflowFailException(f"requests_path {source} does not exist ({exc})") from None
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise AirflowFailException(
                f"requests_path {source} is not a readable gzip file ({type(exc).__name__}: {exc}); "
                "a .gz file must be complete and gzip-compressed"
            ) from None
        self.log.info(
            "Validated %s requests from %s for API version %s: %s body, in %.1f s",
            f"{spooled.request_count:,}",
            source,
            api_version,
            _human_bytes(spooled.size),
            time.monotonic() - started,
        )
        self.observed.requests = spooled.request_count
        return spooled

    def _requests_path(self) -> ObjectStoragePath:
        """The input as every operator resolves it: a URI or an absolute path (a relative one is refused)."""
        from airflow_provider_anthropix.operators.paths import storage_path

        value = self.requests_path
        if not isinstance(value, (str, ObjectStoragePath)) or not str(value).strip():
            raise AirflowFailException(f"requests_path must be a path or URI, got {value!r}")
        return storage_path(value, self.requests_path_conn_id, "requests_path")

    def _requests_list(self) -> list[Any]:
        value = self.requests
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise AirflowFailException(f"requests is a string that is not JSON ({exc})") from None
        if isinstance(value, Mapping) or not isinstance(value, Iterable):
            raise AirflowFailException(
                f"requests must be a list of {{custom_id, params}} objects, got {type(value).__name__}"
            )
        return list(value)

    def _ledger(self, store: ForgivingStore) -> CreateLedger:
        from airflow_provider_anthropix.workflow.ledger import CreateLedger, RecoverySettings

        config = self.client_config()
        return CreateLedger(
            self.hook,
            store,
            id_key=STATE_BATCH_ID,
            attempt_key=STATE_ATTEMPT,
            settings=RecoverySettings(
                checks=self.lost_response_checks,
                interval=self.lost_response_check_interval,
                clock_skew=self.clock_skew,
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
            ),
            policy=config.retry_policy(),
            durable=store.available,
            log=self.log,
        )

    def _create(self, ledger: CreateLedger, spooled: SpooledBatch) -> str:
        from airflow_provider_anthropix.workflow.ledger import CreateFailed

        started = time.monotonic()
        try:
            created = ledger.create(spooled.body())
        except CreateFailed as exc:
            raise self._airflow_failure(exc) from None
        self.batch_id = created.batch_id
        self._observe_batch(created.batch_id, created.how)
        batch = created.batch
        self.log.info(
            "%s batch %s with %s requests (%s body) in %.1f s; status %s, expires at %s",
            "Created" if created.how == "created" else "Adopted",
            created.batch_id,
            f"{spooled.request_count:,}",
            _human_bytes(spooled.size),
            time.monotonic() - started,
            batch.processing_status if batch else "unknown",
            batch.expires_at if batch else "unknown",
        )
        return created.batch_id

    def _airflow_failure(self, exc: CreateFailed) -> AirflowException:
        """A create that failed: retryable unless a retry cannot help; API errors get the shared hints."""
        from airflow_provider_anthropix.failures import task_failure

        if exc.cause is not None and not exc.retryable:
            return self.api_failure(exc.cause, "creating the batch")
        return task_failure(str(exc), retryable=exc.retryable)

    def _lineage_paths(self) -> tuple[list[tuple[Any, str | None]], list[tuple[Any, str | None]]]:
        inputs = [(self.requests_path, self.requests_path_conn_id)] if self.requests_path is not None else []
        outputs = [(self.results_destination, self.results_destination_conn_id)] if self.results_destination else []
        return inputs, outputs

    def on_kill(self) -> None:
        from airflow_provider_anthropix.api.errors import AnthropixError

        if not self.cancel_on_kill or not self.batch_id:
            return
        try:
            batch = self.hook.cancel_batch(self.batch_id)
            self.log.info("Task killed: canceled batch %s (now %s)", batch.id, batch.processing_status)
        except AnthropixError as exc:
            self.log.warning("Task killed: could not cancel batch %s: %s", self.batch_id, exc)


def _prefix_values(default_params: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """The default values a request keeps (the very same objects after the merge) when it shares the cached prefix."""
    from airflow_provider_anthropix.cost.estimate import shared_prefix

    prefix = shared_prefix(default_params)
    if prefix is None or default_params is None:
        return []
    return [(key, default_params[key]) for key in prefix.keys]


def _warn_no_state_store(log: Any) -> None:
    global _warned_no_state_store
    if _warned_no_state_store:
        return
    _warned_no_state_store = True
    log.warning(
        "This Airflow has no task state store (Airflow 3.3+): a retry after a crash during the create "
        "cannot find the batch the earlier try made, and may create a second one."
    )

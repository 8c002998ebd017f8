"""CreateBatchOperator: validate a batch locally, stream it to the API, never create it twice.

The operator is thin; the work lives in plain functions that can be tested alone:
reading and validating requests into a spooled body is
:mod:`airflow_provider_anthropix.io.requests_file`, and finding the batch a create with a lost
answer made is :func:`airflow_provider_anthropix.api.recovery.find_created_batch`.

Crash safety (Airflow 3.3+): the task state store survives retries of a task instance, so
the operator records an "attempt" (start time, request count) before it sends and the batch
id right after the API answers. A retry that finds a batch id reuses it; one that finds
only an attempt (the worker died mid-create) looks the batch up instead of paying twice.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import BaseOperator, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_anthropix.api import (
    AnthropixAPIError,
    AnthropixConnectionError,
    AnthropixError,
    BatchValidationError,
    MessageBatch,
    NotFoundError,
    OverloadedError,
    RateLimitError,
)
from airflow_provider_anthropix.api.limits import MAX_BODY_BYTES
from airflow_provider_anthropix.api.recovery import find_created_batch
from airflow_provider_anthropix.hooks.airflow_errors import airflow_error
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError
from airflow_provider_anthropix.io.publish import (
    DestinationError,
    check_destination_writable,
    destination_uri,
    resolve_destination,
)
from airflow_provider_anthropix.io.requests_file import SpooledBatch, iter_jsonl, spool_batch

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Task state store keys (renaming them breaks retries of tasks in flight during an upgrade).
STATE_BATCH_ID = "anthropix_batch_id"
STATE_ATTEMPT = "anthropix_create_attempt"

#: The slowest upload the lost-answer window allows for (bytes per second).
SLOWEST_UPLOAD_BYTES_PER_S = 256 * 1024

_warned_no_state_store = False


class _StateStore:
    """The task state store when Airflow has one (3.3+), else a no-op; failures never fail a created batch."""

    def __init__(self, store: Any, log: Any) -> None:
        self._store = store
        self._log = log

    @property
    def available(self) -> bool:
        return self._store is not None

    def get(self, key: str) -> Any:
        return self._store.get(key) if self._store is not None else None

    def set(self, key: str, value: Any) -> None:
        if self._store is None:
            return
        try:
            self._store.set(key, value)
        except Exception as exc:
            # After a create, failing the task would make a retry create a second batch: log instead.
            self._log.warning("Could not record %s in the task state store (%s): a retry will not find it", key, exc)

    def delete(self, key: str) -> None:
        if self._store is None:
            return
        try:
            self._store.delete(key)
        except Exception as exc:
            self._log.warning("Could not delete %s from the task state store (%s)", key, exc)


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{size} B"


# -- the operator -------------------------------------------------------------------------------


class CreateBatchOperator(BaseOperator):
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
    """

    template_fields: Sequence[str] = (
        "requests",
        "requests_path",
        "requests_path_conn_id",
        "default_params",
        "anthropix_conn_id",
        "results_destination",
        "results_destination_conn_id",
    )
    template_fields_renderers = {"requests": "json", "default_params": "json"}
    ui_color = "#e8d5c4"

    def __init__(
        self,
        *,
        requests: Any = None,
        requests_path: str | ObjectStoragePath | None = None,
        default_params: dict[str, Any] | None = None,
        anthropix_conn_id: str = AnthropixHook.default_conn_name,
        requests_path_conn_id: str | None = None,
        cancel_on_kill: bool = False,
        max_problems_shown: int = 10,
        lost_response_checks: int = 3,
        lost_response_check_interval: float = 5.0,
        clock_skew: float = 60.0,
        results_destination: str | ObjectStoragePath | None = None,
        results_destination_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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

    @cached_property
    def hook(self) -> AnthropixHook:
        return AnthropixHook(anthropix_conn_id=self.anthropix_conn_id)

    # -- execute ------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        store = _StateStore(context.get("task_state_store"), self.log)
        if not store.available:
            _warn_no_state_store(self.log)
        reused = self._reuse_recorded_batch(store)
        if reused is not None:
            return reused
        pending = store.get(STATE_ATTEMPT)
        if isinstance(pending, Mapping) and pending.get("request_count"):
            self.log.warning(
                "An earlier try started a create at %s and stopped before recording its answer; "
                "looking for that batch instead of sending the requests again",
                pending.get("started_at"),
            )
            found = self._recover(store, pending, "an earlier try stopped during the create")
            if found is not None:
                return found

        self._check_results_destination()
        spooled = self._spool()
        try:
            return self._create(store, spooled)
        finally:
            spooled.discard()

    def _reuse_recorded_batch(self, store: _StateStore) -> str | None:
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
            raise airflow_error(
                exc, doing=f"checking batch {batch_id} recorded by an earlier try", conn_id=self.anthropix_conn_id
            ) from None
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
        return batch.id

    def _check_results_destination(self) -> None:
        """Fail without retries, before anything is sent, when the results could not be stored."""
        if self.results_destination is None:
            return
        try:
            path = resolve_destination(self.results_destination, self.results_destination_conn_id)
            check_destination_writable(path)
        except DestinationError as exc:
            raise AirflowFailException(f"results_destination: {exc}; nothing was sent") from None
        self.log.info("results_destination %s is writable", destination_uri(path))

    def _spool(self) -> SpooledBatch:
        try:
            api_version = self.hook.config.anthropic_version
        except ConnectionSettingsError as exc:
            raise AirflowFailException(str(exc)) from None
        started = time.monotonic()

        def progress(seen: int, body_bytes: int) -> None:
            self.log.info("Validated %s requests (%s encoded so far)", f"{seen:,}", _human_bytes(body_bytes))

        if self.requests_path is not None:
            path = self._requests_path()
            items: Iterable[tuple[int | None, Any]] = iter_jsonl(path)
            file: str | None = str(path)
            source = str(path)
        else:
            items = ((None, request) for request in self._requests_list())
            file = None
            source = "the requests argument"
        try:
            spooled = spool_batch(
                items,
                api_version=api_version,
                default_params=self.default_params,
                source=source,
                file=file,
                max_problems_shown=self.max_problems_shown,
                progress=progress,
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
        return spooled

    def _requests_path(self) -> ObjectStoragePath:
        value = self.requests_path
        if isinstance(value, ObjectStoragePath):
            return value
        if not isinstance(value, str) or not value.strip():
            raise AirflowFailException(f"requests_path must be a path or URI, got {value!r}")
        try:
            if self.requests_path_conn_id:
                return ObjectStoragePath(value.strip(), conn_id=self.requests_path_conn_id)
            return ObjectStoragePath(value.strip())
        except ValueError as exc:
            raise AirflowFailException(
                f"requests_path {value!r} cannot be opened: {exc}. Use a local path or a URI whose scheme has an "
                "Airflow filesystem (file://, s3:// with the Amazon provider, gs://, ...)"
            ) from None

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

    def _create(self, store: _StateStore, spooled: SpooledBatch) -> str:
        attempt = {
            "started_at": pendulum.now("UTC").to_iso8601_string(),
            "request_count": spooled.request_count,
            "body_bytes": spooled.size,
        }
        store.set(STATE_ATTEMPT, attempt)
        started = time.monotonic()
        try:
            batch = self.hook.create_batch(spooled.body())
        except AnthropixConnectionError as exc:
            if not exc.maybe_sent:
                store.delete(STATE_ATTEMPT)
                raise AirflowException(f"The batch was not sent: {exc}") from None
            self.log.warning("The create's answer was lost (%s); the batch may exist. Looking for it.", exc)
            return self._recover_or_retry(store, attempt, str(exc))
        except (RateLimitError, OverloadedError) as exc:
            # The API says it did not act on the request: nothing exists, a retry may send it again.
            store.delete(STATE_ATTEMPT)
            raise AirflowException(f"The API declined the create for now: {exc}") from None
        except AnthropixAPIError as exc:
            if exc.status >= 500 or exc.status in (408, 409):
                # The server failed while handling it: it may or may not have made the batch.
                self.log.warning("The create failed with %s; the batch may still exist. Looking for it.", exc)
                return self._recover_or_retry(store, attempt, str(exc))
            store.delete(STATE_ATTEMPT)
            raise airflow_error(exc, doing="creating the batch", conn_id=self.anthropix_conn_id) from None
        self._record(store, batch)
        self.log.info(
            "Created batch %s with %s requests (%s body) in %.1f s; status %s, expires at %s",
            batch.id,
            f"{spooled.request_count:,}",
            _human_bytes(spooled.size),
            time.monotonic() - started,
            batch.processing_status,
            batch.expires_at,
        )
        return batch.id

    def _record(self, store: _StateStore, batch: MessageBatch) -> None:
        """Remember the batch before anything else can fail: this is what a retry reuses."""
        self.batch_id = batch.id
        store.set(STATE_BATCH_ID, batch.id)
        store.delete(STATE_ATTEMPT)

    def _recover_or_retry(self, store: _StateStore, attempt: Mapping[str, Any], reason: str) -> str:
        """Recovery right after a create failed: adopt the batch, or fail retryable without sending again."""
        found = self._recover(store, attempt, reason)
        if found is None:  # only without a state store: nothing remembers the attempt for the next try
            raise AirflowException(
                f"The create's answer was lost ({reason}) and no batch with {attempt['request_count']:,} requests "
                "has shown up: the request most likely never reached the API. The next try sends it again."
            )
        return found

    def _recover(self, store: _StateStore, attempt: Mapping[str, Any], reason: str) -> str | None:
        """The batch a create with a lost answer made, or None once two rounds of looks found nothing.

        The first round that finds nothing keeps the attempt and fails retryable: a large create can
        take a while to show up in the list, and Airflow's retry delay gives it that while. The next
        try looks again (second round); only if that finds nothing either is the request sent again.
        """
        request_count = int(attempt["request_count"])
        started_at = pendulum.parse(str(attempt["started_at"]))
        if not isinstance(started_at, pendulum.DateTime):
            raise AirflowFailException(f"the recorded create attempt has no usable start time: {attempt!r}")
        if self.lost_response_checks == 0:
            raise AirflowFailException(
                f"The create's answer was lost ({reason}) and adopting a batch is off (lost_response_checks=0). "
                f"A batch of {request_count:,} requests created from {started_at} on may exist: check the batch "
                "list; to send again, clear this task's state store (task_state_store) and clear the task."
            )
        skew = timedelta(seconds=self.clock_skew)
        window_start = started_at - skew
        latest_arrival = started_at + timedelta(seconds=self._longest_send(attempt))
        for check in range(1, self.lost_response_checks + 1):
            # Never later than the send could have reached the API: an attempt recovered days later
            # (a cleared task) must not adopt the next night's batch of the same size.
            window_end = min(pendulum.now("UTC"), latest_arrival) + skew
            try:
                matches = find_created_batch(
                    self.hook.iter_batches(page_size=100),
                    request_count=request_count,
                    window_start=window_start,
                    window_end=window_end,
                )
            except AnthropixError as exc:
                raise AirflowException(
                    f"The create's answer was lost ({reason}) and listing batches to find it failed: {exc}. "
                    "The next try looks again before sending anything."
                ) from None
            if len(matches) == 1:
                batch = matches[0]
                self.log.warning(
                    "Adopting batch %s: the only batch with %s requests created between %s and %s "
                    "(the create's answer was lost: %s)",
                    batch.id,
                    f"{request_count:,}",
                    window_start,
                    window_end,
                    reason,
                )
                self._record(store, batch)
                return batch.id
            if len(matches) > 1:
                ids = ", ".join(b.id for b in matches)
                raise AirflowFailException(
                    f"The create's answer was lost ({reason}) and {len(matches)} batches with "
                    f"{request_count:,} requests were created between {window_start} and {window_end}: {ids}. "
                    "This task cannot tell which one is its own. Check them in the console (or list batches), "
                    "cancel the ones that are not wanted, then clear this task: it adopts the one that is left."
                )
            if check < self.lost_response_checks:
                time.sleep(self.lost_response_check_interval)
        if store.available and not attempt.get("looked"):
            store.set(STATE_ATTEMPT, {**attempt, "looked": True})
            raise AirflowException(
                f"The create's answer was lost ({reason}) and no batch with {request_count:,} requests was created "
                f"between {window_start} and {window_end} ({self.lost_response_checks} looks): the request most "
                "likely never reached the API, but a large create can take a while to show up, so the next try "
                "looks once more before sending it again."
            )
        self.log.warning(
            "No batch with %s requests was created between %s and %s after two rounds of looks: the request "
            "never reached the API. Sending it again.",
            f"{request_count:,}",
            window_start,
            window_end,
        )
        store.delete(STATE_ATTEMPT)
        return None

    def _longest_send(self, attempt: Mapping[str, Any]) -> float:
        """Seconds after the attempt's start by which its body had reached the API, if it ever did.

        Connect and read timeouts, plus the upload at a very slow 256 KB/s: the worst the
        client tolerates before giving up on the call.
        """
        config = self.hook.config
        body_bytes = int(attempt.get("body_bytes") or MAX_BODY_BYTES)
        return config.connect_timeout + config.read_timeout + body_bytes / SLOWEST_UPLOAD_BYTES_PER_S

    def on_kill(self) -> None:
        if not self.cancel_on_kill or not self.batch_id:
            return
        try:
            batch = self.hook.cancel_batch(self.batch_id)
            self.log.info("Task killed: canceled batch %s (now %s)", batch.id, batch.processing_status)
        except AnthropixError as exc:
            self.log.warning("Task killed: could not cancel batch %s: %s", self.batch_id, exc)


def _warn_no_state_store(log: Any) -> None:
    global _warned_no_state_store
    if _warned_no_state_store:
        return
    _warned_no_state_store = True
    log.warning(
        "This Airflow has no task state store (Airflow 3.3+): a retry after a crash during the create "
        "cannot find the batch the earlier try made, and may create a second one."
    )

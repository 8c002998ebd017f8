"""The create-once ledger: send a batch so that no crash, retry or lost answer pays for it twice.

The Message Batches API has no idempotency key, and a batch is billed the moment it is
created. So the ledger writes down what it is about to do before it does it:

1. an **attempt** (start time, request count, body size) is recorded before the body is sent;
2. the **batch id** replaces the attempt the moment the API answers.

A later try that finds a batch id uses it. One that finds only an attempt (the worker died
mid-create, or the answer was lost) looks for the batch in the list before sending again: a
batch created inside the attempt's time window with the same request count, none of the
ids the caller already knows (``known_ids``: a job's other batches, so equal shards cannot
be mistaken for each other), and not canceled. It adopts a single match, refuses to guess
between several, and sends again only after two rounds of looks found nothing.

How a failed create is classified comes from the retry policy, not from a second table:
statuses the policy would resend a create after (429, 529, ``x-should-retry: true``) mean
the API did not act; other transient failures mean it may have; the rest are permanent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import pendulum

from airflow_provider_anthropix.api.config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
from airflow_provider_anthropix.api.errors import (
    AnthropixConnectionError,
    AnthropixError,
    AnthropixResponseError,
)
from airflow_provider_anthropix.api.limits import MAX_BODY_BYTES
from airflow_provider_anthropix.api.models import EncodedBody, MessageBatch
from airflow_provider_anthropix.api.recovery import find_created_batch
from airflow_provider_anthropix.api.retry import RetryPolicy, is_transient
from airflow_provider_anthropix.workflow.store import StateStore

#: The slowest upload the lost-answer window allows for (bytes per second).
SLOWEST_UPLOAD_BYTES_PER_S = 256 * 1024


class BatchCalls(Protocol):
    """The API calls the ledger needs (the sync client and the hook both have them)."""

    def create_batch(self, requests: EncodedBody) -> MessageBatch: ...

    def get_batch(self, batch_id: str) -> MessageBatch: ...

    def iter_batches(self, page_size: int = 100) -> Iterator[MessageBatch]: ...


class CreateFailed(AnthropixError):
    """The create did not produce a batch this try.

    :param retryable: whether a later try may succeed (Airflow-facing code maps False to a
        failure without retries).
    :param cause: the API error behind it, when there is one (for hints naming the fix).
    :param declined: the API said it did not act (429/529): nothing exists; a job may wait and try again.
    """

    def __init__(
        self, message: str, *, retryable: bool, cause: AnthropixError | None = None, declined: bool = False
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.cause = cause
        self.declined = declined


@dataclass(frozen=True)
class RecoverySettings:
    """How hard to look for the batch of a create whose answer was lost.

    :param checks: looks per try; 0 never adopts a batch (the create then fails without retries).
    :param interval: seconds between looks.
    :param clock_skew: tolerance between this machine's clock and the API's ``created_at``.
    :param connect_timeout: the client's connect timeout (bounds when the send could have arrived).
    :param read_timeout: the client's read timeout.
    """

    checks: int = 3
    interval: float = 5.0
    clock_skew: float = 60.0
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT

    def longest_send(self, body_bytes: int | None) -> float:
        """Seconds after the start by which the body had reached the API, if it ever did."""
        return self.connect_timeout + self.read_timeout + (body_bytes or MAX_BODY_BYTES) / SLOWEST_UPLOAD_BYTES_PER_S


@dataclass(frozen=True)
class Created:
    """The batch a ledger ended up with, and how: ``created``, ``adopted`` or ``reused``."""

    batch: MessageBatch | None
    batch_id: str
    how: str


class CreateLedger:
    """Create one batch at most once, with its state in ``store`` under two keys.

    :param calls: the API.
    :param store: where the attempt and the batch id are kept (must survive retries).
    :param id_key: the key of the batch id.
    :param attempt_key: the key of the attempt record.
    :param known_ids: batch ids that are someone else's (never adopted).
    :param durable: whether ``store`` survives a retry; without it a first round of looks that
        finds nothing cannot be remembered, so the create is sent again at once.
    """

    def __init__(
        self,
        calls: BatchCalls,
        store: StateStore,
        *,
        id_key: str,
        attempt_key: str,
        settings: RecoverySettings | None = None,
        policy: RetryPolicy | None = None,
        known_ids: Callable[[], Collection[str]] = frozenset,
        durable: bool = True,
        log: logging.Logger | Any = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], pendulum.DateTime] = lambda: pendulum.now("UTC"),
    ) -> None:
        self.calls = calls
        self.store = store
        self.id_key = id_key
        self.attempt_key = attempt_key
        self.settings = settings or RecoverySettings()
        self.policy = policy or RetryPolicy()
        self.known_ids = known_ids
        self.durable = durable
        self.log = log or logging.getLogger(__name__)
        self.sleep = sleep
        self.now = now

    # -- what is recorded -------------------------------------------------------------------

    @property
    def recorded_id(self) -> str | None:
        value = self.store.get(self.id_key)
        return str(value) if value else None

    @property
    def pending_attempt(self) -> Mapping[str, Any] | None:
        value = self.store.get(self.attempt_key)
        return value if isinstance(value, Mapping) and value.get("request_count") else None

    # -- the steps --------------------------------------------------------------------------

    def resume(self) -> Created | None:
        """The batch of an earlier try: recorded, or found after a lost answer; None if there is none yet."""
        recorded = self.recorded_id
        if recorded:
            return Created(None, recorded, "reused")
        attempt = self.pending_attempt
        if attempt is None:
            return None
        self.log.warning(
            "An earlier try started a create at %s and stopped before recording its answer; "
            "looking for that batch instead of sending the requests again",
            attempt.get("started_at"),
        )
        return self._recover(attempt, "an earlier try stopped during the create")

    def create(self, body: EncodedBody) -> Created:
        """Record the attempt, send, record the batch id; on a lost answer look for the batch."""
        attempt = {
            "started_at": self.now().to_iso8601_string(),
            "request_count": body.request_count,
            "body_bytes": body.size,
        }
        self.store.set(self.attempt_key, attempt)
        try:
            batch = self.calls.create_batch(body)
        except AnthropixError as exc:
            return self._after_failed_create(exc, attempt)
        self.record(batch)
        return Created(batch, batch.id, "created")

    def resume_or_create(self, body_factory: Callable[[], EncodedBody]) -> Created:
        """:meth:`resume`, else :meth:`create` with the body ``body_factory`` builds."""
        found = self.resume()
        return found if found is not None else self.create(body_factory())

    def record(self, batch: MessageBatch) -> None:
        """Remember the batch before anything else can fail: this is what a retry reuses."""
        self.store.set(self.id_key, batch.id)
        self.store.delete(self.attempt_key)

    # -- failures ---------------------------------------------------------------------------

    def _after_failed_create(self, exc: AnthropixError, attempt: Mapping[str, Any]) -> Created:
        if isinstance(exc, AnthropixConnectionError) and not exc.maybe_sent:
            self.store.delete(self.attempt_key)
            raise CreateFailed(f"The batch was not sent: {exc}", retryable=True, cause=exc) from None
        if self.policy.is_retryable(exc, idempotent=False):
            # The API says it did not act on the request (429, 529, x-should-retry: true).
            self.store.delete(self.attempt_key)
            raise CreateFailed(
                f"The API declined the create for now: {exc}", retryable=True, cause=exc, declined=True
            ) from None
        if is_transient(exc) or isinstance(exc, AnthropixResponseError):
            # A broken connection after sending, a timeout, a 5xx, or a success answer that is not
            # a batch (a truncating proxy): the batch may exist.
            self.log.warning("The create's answer was lost (%s); the batch may exist. Looking for it.", exc)
            if isinstance(exc, AnthropixResponseError):
                # Remembered across tries: a success status means the API most likely made the batch.
                attempt = {**attempt, "answered": True}
                self.store.set(self.attempt_key, attempt)
            found = self._recover(attempt, str(exc))
            if found is None:
                raise CreateFailed(
                    f"The create's answer was lost ({exc}) and no batch with {attempt['request_count']:,} "
                    "requests has shown up: the request most likely never reached the API. The next try "
                    "sends it again.",
                    retryable=True,
                    cause=exc,
                )
            return found
        self.store.delete(self.attempt_key)
        raise CreateFailed(f"creating the batch failed: {exc}", retryable=False, cause=exc) from None

    def _recover(self, attempt: Mapping[str, Any], reason: str) -> Created | None:
        """The batch a create with a lost answer made, or None once two rounds of looks found nothing.

        The first round that finds nothing keeps the attempt and fails retryable: a large create
        can take a while to show up in the list, and the retry delay gives it that while. The
        next try looks again; only if that finds nothing either is the request sent again.
        """
        request_count = int(attempt["request_count"])
        started_at = pendulum.parse(str(attempt["started_at"]))
        if not isinstance(started_at, pendulum.DateTime):
            raise CreateFailed(f"the recorded create attempt has no usable start time: {attempt!r}", retryable=False)
        settings = self.settings
        if settings.checks <= 0:
            raise CreateFailed(
                f"The create's answer was lost ({reason}) and adopting a batch is off (lost_response_checks=0). "
                f"A batch of {request_count:,} requests created from {started_at} on may exist: check the batch "
                "list; to send again, clear the recorded attempt (the task's state store) and clear the task.",
                retryable=False,
            )
        skew = timedelta(seconds=settings.clock_skew)
        window_start = started_at - skew
        latest_arrival = started_at + timedelta(seconds=settings.longest_send(attempt.get("body_bytes")))
        for check in range(1, settings.checks + 1):
            # Never later than the send could have reached the API: an attempt recovered days later
            # (a cleared task) must not adopt the next night's batch of the same size.
            window_end = min(self.now(), latest_arrival) + skew
            known = set(self.known_ids())
            try:
                matches = [
                    batch
                    for batch in find_created_batch(
                        self.calls.iter_batches(page_size=100),
                        request_count=request_count,
                        window_start=window_start,
                        window_end=window_end,
                    )
                    if batch.id not in known
                ]
            except AnthropixError as exc:
                raise CreateFailed(
                    f"The create's answer was lost ({reason}) and listing batches to find it failed: {exc}. "
                    "The next try looks again before sending anything.",
                    retryable=True,
                    cause=exc,
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
                self.record(batch)
                return Created(batch, batch.id, "adopted")
            if len(matches) > 1:
                ids = ", ".join(b.id for b in matches)
                raise CreateFailed(
                    f"The create's answer was lost ({reason}) and {len(matches)} batches with "
                    f"{request_count:,} requests were created between {window_start} and {window_end}: {ids}. "
                    "This task cannot tell which one is its own. Check them in the console (or list batches), "
                    "cancel the ones that are not wanted, then clear this task: it adopts the one that is left.",
                    retryable=False,
                )
            if check < settings.checks:
                self.sleep(settings.interval)
        if self.durable and not attempt.get("looked"):
            self.store.set(self.attempt_key, {**attempt, "looked": True})
            raise CreateFailed(
                f"The create's answer was lost ({reason}) and no batch with {request_count:,} requests was created "
                f"between {window_start} and {window_end} ({settings.checks} looks): the request most "
                "likely never reached the API, but a large create can take a while to show up, so the next try "
                "looks once more before sending it again.",
                retryable=True,
            )
        if attempt.get("answered"):
            # The API answered the create with a success status: it most likely made the batch,
            # so sending the requests again would probably pay for them twice.
            raise CreateFailed(
                f"The create was answered with a success status but not with a batch ({reason}), and no batch "
                f"with {request_count:,} requests was created between {window_start} and {window_end}. It is not "
                "sent again automatically: check the batch list, then, to send it again, clear the recorded "
                "attempt (the task's state store) and clear the task.",
                retryable=False,
            )
        self.log.warning(
            "No batch with %s requests was created between %s and %s after two rounds of looks: the request "
            "never reached the API. Sending it again.",
            f"{request_count:,}",
            window_start,
            window_end,
        )
        self.store.delete(self.attempt_key)
        return None

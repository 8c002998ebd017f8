"""An in-memory Message Batches API with only the calls the workflow layer makes, for its unit tests.

``FakeBatches`` has ``create_batch``, ``get_batch``, ``iter_batches`` (the ledger's
``BatchCalls``) and ``iter_result_bytes`` (the job's ``JobCalls``). Batches stay processing
until a test ends them (``end``); each request's outcome per attempt comes from ``outcomes``
(``"succeeded"``, ``"errored:<error type>"``, ``"expired"``, ``"canceled"``; the last one
repeats). What the next creates do is queued in ``next_creates``:

- ``"ok"``: made and answered;
- ``"lose"``: made, the answer lost to a reset connection (the client cannot tell it was made);
- ``"reset"``: a reset connection before the API acted: nothing made, the client cannot tell;
- ``"garble"``: nothing made, answered with a success status that is not a batch;
- ``"crash"``: made, then the worker dies (``Crash``) before it reads the answer;
- ``"decline"``: 429, nothing made; ``"refuse"``: 400, nothing made;
- ``"unsent"``: the connection was refused: nothing sent.

The integration tests drive the same code against the emulator over HTTP; this is for what
is faster and plainer to arrange in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pendulum

from airflow_provider_anthropix.api.errors import (
    AnthropixConnectionError,
    AnthropixResponseError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
)
from airflow_provider_anthropix.api.models import EncodedBody, MessageBatch, RequestCounts
from tests.support.payloads import result_line

T0 = pendulum.datetime(2026, 11, 25, 2, 0, tz="UTC")


class Crash(Exception):
    """Stands in for a worker killed at a chosen step (not an API error: nothing catches it)."""


class Clock:
    """A clock a test moves by hand; shared by the fake API (``created_at``) and the code under test (``now``)."""

    def __init__(self, start: pendulum.DateTime = T0) -> None:
        self.at = start

    def __call__(self) -> pendulum.DateTime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at = self.at.add(**delta)  # type: ignore[arg-type]


@dataclass
class FakeBatch:
    id: str
    custom_ids: list[str]
    created_at: pendulum.DateTime
    outcomes: list[str]
    ended: bool = False
    canceled_at: pendulum.DateTime | None = None

    def counts(self) -> RequestCounts:
        if not self.ended:
            return RequestCounts(processing=len(self.custom_ids))
        kinds = [outcome.split(":")[0] for outcome in self.outcomes]
        return RequestCounts(**{kind: kinds.count(kind) for kind in set(kinds)})

    def view(self) -> MessageBatch:
        return MessageBatch(
            id=self.id,
            processing_status="ended" if self.ended else "in_progress",
            request_counts=self.counts(),
            created_at=self.created_at,
            ended_at=self.created_at.add(minutes=1) if self.ended else None,
            cancel_initiated_at=self.canceled_at,
        )

    def results(self) -> bytes:
        lines = []
        for custom_id, outcome in zip(self.custom_ids, self.outcomes, strict=True):
            kind, _, error_type = outcome.partition(":")
            lines.append(result_line(custom_id, kind, error_type=error_type or "api_error"))
        return b"".join(lines)


@dataclass
class FakeBatches:
    """See the module docstring."""

    outcomes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    now: Callable[[], pendulum.DateTime] = field(default_factory=Clock)
    next_creates: list[str] = field(default_factory=list)
    #: Raised by the next listings, one each (a listing that fails).
    list_failures: list[Exception] = field(default_factory=list)
    batches: dict[str, FakeBatch] = field(default_factory=dict)
    #: Every create call, made or not, with its custom_ids.
    sent: list[list[str]] = field(default_factory=list)
    listings: int = 0
    #: The most batches processing at once right after a create.
    most_in_flight: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    #: Called with each create body before anything else (to look at the caller's state mid-create).
    on_create: Callable[[EncodedBody], None] | None = None

    # -- arranging -------------------------------------------------------------------------

    def add(self, request_count: int, *, canceled: bool = False, ended: bool = False, **at: float) -> FakeBatch:
        """Someone else's batch of ``request_count`` requests, created ``at`` (``seconds=-5``) from now."""
        created = self.now().add(**at)  # type: ignore[arg-type]
        batch = FakeBatch(
            id=f"msgbatch_other{len(self.batches):03d}",
            custom_ids=[f"other-{i}" for i in range(request_count)],
            created_at=created,
            outcomes=["succeeded"] * request_count,
            ended=ended,
            canceled_at=created if canceled else None,
        )
        self.batches[batch.id] = batch
        return batch

    def end(self, *batch_ids: str) -> None:
        """End the given batches, or every processing one."""
        for batch in self.batches.values():
            if not batch_ids or batch.id in batch_ids:
                batch.ended = True

    @property
    def made(self) -> list[FakeBatch]:
        """The batches created through ``create_batch`` (not ``add``), oldest first."""
        return [b for b in self.batches.values() if not b.id.startswith("msgbatch_other")]

    def processing(self) -> list[str]:
        return [b.id for b in self.batches.values() if not b.ended]

    # -- the API -----------------------------------------------------------------------------

    def create_batch(self, requests: EncodedBody) -> MessageBatch:
        if self.on_create is not None:
            self.on_create(requests)
        body = json.loads(b"".join(requests.chunks()))
        custom_ids = [str(r["custom_id"]) for r in body["requests"]]
        assert len(custom_ids) == requests.request_count
        self.sent.append(custom_ids)
        action = self.next_creates.pop(0) if self.next_creates else "ok"
        if action == "decline":
            raise RateLimitError("rate limited", status=429, error_type="rate_limit_error")
        if action == "refuse":
            raise BadRequestError("bad request", status=400, error_type="invalid_request_error")
        if action == "unsent":
            raise AnthropixConnectionError("connection refused", maybe_sent=False)
        if action == "reset":
            raise AnthropixConnectionError("connection reset by peer")
        if action == "garble":
            raise AnthropixResponseError("the create was answered with something that is not a batch")
        batch = self._make(custom_ids)
        if action == "lose":
            raise AnthropixConnectionError("connection reset by peer")
        if action == "crash":
            raise Crash(f"killed after the API made {batch.id}")
        assert action == "ok", action
        return batch.view()

    def get_batch(self, batch_id: str) -> MessageBatch:
        if batch_id not in self.batches:
            raise NotFoundError(f"no batch {batch_id}", status=404, error_type="not_found_error")
        return self.batches[batch_id].view()

    def iter_batches(self, page_size: int = 100) -> Iterator[MessageBatch]:
        self.listings += 1
        if self.list_failures:
            raise self.list_failures.pop(0)
        newest_first = sorted(self.batches.values(), key=lambda b: b.created_at, reverse=True)
        for batch in newest_first:
            yield batch.view()

    def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        found = self.batches[batch if isinstance(batch, str) else batch.id]
        assert found.ended, f"results of {found.id} asked for before it ended"
        data = found.results()
        for start in range(0, len(data), 300):  # small chunks: lines arrive cut
            yield data[start : start + 300]

    def _make(self, custom_ids: list[str]) -> FakeBatch:
        outcomes = []
        for custom_id in custom_ids:
            attempt = self.attempts.get(custom_id, 0)
            self.attempts[custom_id] = attempt + 1
            planned = self.outcomes.get(custom_id) or ["succeeded"]
            outcomes.append(planned[min(attempt, len(planned) - 1)])
        batch = FakeBatch(
            id=f"msgbatch_{len(self.made) + 1:04d}", custom_ids=custom_ids, created_at=self.now(), outcomes=outcomes
        )
        self.batches[batch.id] = batch
        self.most_in_flight = max(self.most_in_flight, len(self.processing()))
        return batch

"""A batch job: many batches, retry rounds, one merged result, resumable at every step.

The job is a state machine over a small journal. Each call of :meth:`JobRunner.advance`
reads the journal, moves the job as far as it can without waiting, writes down every step
*before* acting on it, and returns either :class:`Wait` (batches are processing: wait for
them, then call again) or :class:`Done` (results published). A call may come from a new
process on another machine after a crash, a deferral or a cleared task: the journal is all
it needs.

The steps:

1. **plan**: split and validate the whole input into round-0 shards (all of it before any
   batch exists); the input's fingerprint and the options that shape the plan are recorded,
   so a resumed job refuses a changed input instead of mixing two.
2. **create**: one shard at a time through the create-once ledger, at most
   ``max_batches_in_flight`` batches processing at once. One create in flight at a time, its
   attempt recorded, and the job's other batch ids excluded from the lost-answer candidates:
   that is what keeps recovery unambiguous when shards have the same size.
3. **wait**: until a batch ends (room for the next shard) or, with nothing left to create,
   until the round's batches have ended.
4. **retry round**: the requests that errored with a retryable type (or expired) are picked
   out of the round's shard files and sent again as the next round, up to ``max_retry_rounds``.
   The results read for that are kept in the working folder as they stream past, so the
   export does not download them a second time.
5. **export**: the results of every batch as one stream, the earlier attempts of retried
   requests left out, published with one manifest. A cleared finished job exports again
   from the same batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import msgspec
import pendulum

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.models import RESULT_TYPES, EncodedBody, MessageBatch, RequestCounts
from airflow_provider_anthropix.workflow.ledger import BatchCalls, CreateFailed, CreateLedger, RecoverySettings
from airflow_provider_anthropix.workflow.outcome import RETRYABLE_ERROR_TYPES

JOURNAL_VERSION = 1


class JobError(Exception):
    """The job cannot go on this try. ``retryable`` says whether another try of the task may."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


# -- the journal ------------------------------------------------------------------------------------


class ShardState(msgspec.Struct, kw_only=True):
    """One shard of one round, and the batch made from it."""

    name: str
    requests: int
    body_bytes: int
    batch_id: str | None = None
    attempt: dict[str, Any] | None = None
    ended: bool = False
    counts: dict[str, int] | None = None
    #: The batch's results as read at the round's end, kept in the working folder for the export.
    results_copy: str | None = None
    results_copy_bytes: int = 0


class RoundState(msgspec.Struct, kw_only=True):
    """A round: its shards; once closed, which of its requests the next round sent again."""

    index: int
    shards: list[ShardState]
    closed: bool = False
    #: File listing the custom_ids of this round that the next round sent again (their lines here are dropped).
    resent_ids: str | None = None
    #: Result types of those dropped lines, to know how many lines the merged export holds.
    resent_counts: dict[str, int] = msgspec.field(default_factory=dict)
    #: Errors of types that are never retried, by type.
    permanent_errors: dict[str, int] = msgspec.field(default_factory=dict)


class JobState(msgspec.Struct, kw_only=True):
    """Everything a resumed job needs, as stored in the journal."""

    version: int = JOURNAL_VERSION
    identity: dict[str, str]
    fingerprint: str
    inputs: list[dict[str, Any]]
    total_requests: int
    planned_at: str
    deadline: str
    rounds: list[RoundState]
    exports: int = 0
    #: The cost estimate made before the first create (None: not made, or made by no hook).
    estimate: dict[str, Any] | None = None

    def all_shards(self) -> Iterator[tuple[RoundState, ShardState]]:
        for round_ in self.rounds:
            for shard in round_.shards:
                yield round_, shard

    def known_batch_ids(self) -> set[str]:
        return {shard.batch_id for _, shard in self.all_shards() if shard.batch_id}


_ENCODER = msgspec.json.Encoder()


def state_to_dict(state: JobState) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(_ENCODER.encode(state))
    return decoded


def state_from_dict(data: Mapping[str, Any]) -> JobState:
    try:
        return msgspec.convert(data, JobState)
    except msgspec.ValidationError as exc:
        raise JobError(
            f"the job's journal is not readable ({exc}); it was not written by this version", retryable=False
        ) from None


# -- what the job needs from the outside -------------------------------------------------------------


class JobCalls(BatchCalls, Protocol):
    """The API calls of a job (the hook has them)."""

    def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = ...) -> Iterator[bytes]: ...


class RetryScanResult(Protocol):
    """What a scan of one batch's results found: ids to send again, their result types, other errors.

    ``copy`` names the file the scanned bytes were kept in (``copy_bytes`` long), or is None.
    """

    ids: set[str]
    counts: dict[str, int]
    permanent_errors: dict[str, int]
    copy: str | None
    copy_bytes: int


@dataclass(frozen=True)
class ExportSource:
    """One batch's results in the merged export, and the custom_ids its stream leaves out.

    ``copy`` (``copy_bytes`` long) is the results file the round's end kept; the export reads
    it instead of downloading the results again, when it is still there at that size.
    """

    batch_id: str
    round: int
    drop: Collection[str]
    copy: str | None = None
    copy_bytes: int = 0


class JobStorage(Protocol):
    """The job's files: journal, shards, id lists and the merged export (``io/`` implements it)."""

    def load_journal(self) -> dict[str, Any] | None: ...

    def save_journal(self, data: dict[str, Any]) -> None: ...

    def fingerprint(self) -> list[dict[str, Any]]: ...

    def split(self) -> list[dict[str, Any]]: ...

    def body(self, shard: ShardState) -> EncodedBody: ...

    def select(self, round_index: int, shards: list[ShardState], ids: Collection[str]) -> list[dict[str, Any]]: ...

    def write_ids(self, name: str, ids: Collection[str]) -> None: ...

    def read_ids(self, name: str) -> set[str]: ...

    def remove(self, names: Collection[str]) -> None: ...

    def scan_for_retries(
        self, batch_id: str, chunks: Iterable[bytes], *, retry_error_types: Collection[str], retry_expired: bool
    ) -> RetryScanResult: ...

    def export(
        self,
        sources: list[ExportSource],
        chunks_of: Callable[[str], Iterable[bytes]],
        expected: RequestCounts,
        manifest_extra: dict[str, Any],
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class JobSettings:
    """The options that shape a job.

    :param max_batches_in_flight: batches created and not yet ended at once.
    :param retry_error_types: errored results of these types are sent again.
    :param retry_expired: expired results are sent again.
    :param max_retry_rounds: rounds after the first.
    :param timeout: seconds from planning after which the job gives up (kept in the journal, so
        deferrals do not restart it).
    :param max_errored_ratio: after the results landed, fail when errored / total is above it.
    :param keep_work_files: keep the shard files and results copies after a successful export.
    :param plan_options: everything else that shapes the plan (limits, defaults, API version),
        part of the fingerprint so a resumed job with other options refuses to mix plans.
    """

    max_batches_in_flight: int = 10
    retry_error_types: tuple[str, ...] = RETRYABLE_ERROR_TYPES
    retry_expired: bool = True
    max_retry_rounds: int = 2
    timeout: float = 48 * 3600.0
    max_errored_ratio: float | None = 0.0
    keep_work_files: bool = False
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    plan_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_batches_in_flight < 1:
            raise ValueError(f"max_batches_in_flight must be at least 1, got {self.max_batches_in_flight}")
        if self.max_retry_rounds < 0:
            raise ValueError(f"max_retry_rounds must be 0 or more, got {self.max_retry_rounds}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if self.max_errored_ratio is not None and not 0.0 <= self.max_errored_ratio <= 1.0:
            raise ValueError(f"max_errored_ratio must be between 0 and 1, got {self.max_errored_ratio}")
        if "invalid_request_error" in self.retry_error_types:
            raise ValueError("invalid_request_error is permanent: the same request fails the same way again")


@dataclass(frozen=True)
class JobProgress:
    """Where the job stands, for logs and the trigger's progress line."""

    batches: int
    batches_ended: int
    requests: int
    requests_done: int
    round: int

    def describe(self) -> str:
        return (
            f"round {self.round}: {self.batches_ended}/{self.batches} batches ended, "
            f"{self.requests_done:,}/{self.requests:,} requests done"
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "batches": self.batches,
            "batches_ended": self.batches_ended,
            "requests": self.requests,
            "requests_done": self.requests_done,
            "round": self.round,
        }


@dataclass(frozen=True)
class Wait:
    """Batches are processing: wait until ``wait_for`` (``any`` or ``all``) of ``batch_ids`` have ended."""

    batch_ids: list[str]
    wait_for: str
    deadline: str
    progress: JobProgress


@dataclass(frozen=True)
class Done:
    """The merged results are published; ``summary`` is the job's small XCom."""

    summary: dict[str, Any]


# -- the state machine ----------------------------------------------------------------------------


class _ShardSlot:
    """The ledger's state store, backed by one shard of the journal (saved at every write)."""

    def __init__(self, shard: ShardState, save: Callable[[], None]) -> None:
        self.shard = shard
        self._save = save

    def get(self, key: str) -> Any:
        return self.shard.batch_id if key == "batch_id" else self.shard.attempt

    def set(self, key: str, value: Any) -> None:
        if key == "batch_id":
            self.shard.batch_id = str(value)
        else:
            self.shard.attempt = dict(value)
        self._save()

    def delete(self, key: str) -> None:
        if key == "batch_id":
            self.shard.batch_id = None
        else:
            self.shard.attempt = None
        self._save()


class JobRunner:
    """Moves one job forward from its journal; see the module docstring for the steps.

    :param calls: the API (sync).
    :param storage: the job's files.
    :param settings: options.
    :param identity: who owns the job (dag, task, run, map index), recorded and checked.
    :param before_first_create: called with the planned state while no batch exists yet (the cost
        estimate and budget gate); may raise to stop the job; what it returns is kept in the
        journal (``estimate``) and the manifest. Called again on a resumed job until it returns.
    """

    def __init__(
        self,
        calls: JobCalls,
        storage: JobStorage,
        settings: JobSettings,
        *,
        identity: Mapping[str, str],
        log: logging.Logger | Any = None,
        now: Callable[[], pendulum.DateTime] = lambda: pendulum.now("UTC"),
        sleep: Callable[[float], None] = time.sleep,
        before_first_create: Callable[[JobState], dict[str, Any] | None] | None = None,
    ) -> None:
        self.before_first_create = before_first_create
        self.calls = calls
        self.storage = storage
        self.settings = settings
        self.identity = dict(identity)
        self.log = log or logging.getLogger(__name__)
        self.now = now
        self.sleep = sleep
        self.state: JobState | None = None

    # -- journal -----------------------------------------------------------------------------

    def _save(self) -> None:
        assert self.state is not None
        self.storage.save_journal(state_to_dict(self.state))

    def _fingerprint(self, inputs: list[dict[str, Any]]) -> str:
        material = json.dumps({"inputs": inputs, "options": dict(self.settings.plan_options)}, sort_keys=True)
        return hashlib.sha256(material.encode()).hexdigest()[:32]

    def _load_or_plan(self) -> JobState:
        inputs = self.storage.fingerprint()
        fingerprint = self._fingerprint(inputs)
        raw = self.storage.load_journal()
        if raw is not None:
            state = state_from_dict(raw)
            if state.fingerprint != fingerprint:
                raise JobError(
                    "the input or the options changed since this job was planned (planned from "
                    f"{_describe_inputs(state.inputs)}, now {_describe_inputs(inputs)}); the job does not mix "
                    "two inputs. Restore the input, or start afresh by removing the job's working folder "
                    "(work_prefix) or writing to a new destination.",
                    retryable=False,
                )
            return state
        started = time.monotonic()
        shards = self.storage.split()
        planned = self.now()
        state = JobState(
            identity=self.identity,
            fingerprint=fingerprint,
            inputs=inputs,
            total_requests=sum(int(s["requests"]) for s in shards),
            planned_at=planned.to_iso8601_string(),
            deadline=planned.add(seconds=int(self.settings.timeout)).to_iso8601_string(),
            rounds=[RoundState(index=0, shards=[_shard(s) for s in shards])],
        )
        self.state = state
        self._save()
        self.log.info(
            "Planned the job: %s requests in %d batch(es), validated in %.1f s; deadline %s",
            f"{state.total_requests:,}",
            len(shards),
            time.monotonic() - started,
            state.deadline,
        )
        return state

    # -- one step ----------------------------------------------------------------------------

    def advance(self) -> Wait | Done:
        """Move the job as far as it goes without waiting."""
        state = self.state = self._load_or_plan()
        if self.before_first_create is not None and state.estimate is None and not self._anything_sent(state):
            state.estimate = self.before_first_create(state) or {}
            self._save()
        while True:
            current = state.rounds[-1]
            if not current.closed:
                self._refresh(current)
                waiting = self._create_what_fits(current, state)
                if waiting is not None:
                    return waiting
                self._close_round(current, state)
                continue
            return Done(self._export(state))

    @staticmethod
    def _anything_sent(state: JobState) -> bool:
        return any(shard.batch_id or shard.attempt for _, shard in state.all_shards())

    def _deadline_passed(self, state: JobState) -> bool:
        deadline = pendulum.parse(state.deadline)
        return isinstance(deadline, pendulum.DateTime) and self.now() >= deadline

    def _refresh(self, current: RoundState) -> None:
        for shard in current.shards:
            if shard.batch_id and not shard.ended:
                try:
                    batch = self.calls.get_batch(shard.batch_id)
                except AnthropixError as exc:
                    raise JobError(f"checking batch {shard.batch_id} failed: {exc}", retryable=True) from None
                if batch.is_ended:
                    shard.ended = True
                    shard.counts = batch.request_counts.to_dict()
                    self._save()
                    self.log.info("Batch %s (%s) ended: %s", batch.id, shard.name, _counts_text(shard.counts))

    def _create_what_fits(self, current: RoundState, state: JobState) -> Wait | None:
        in_flight = [s for s in current.shards if s.batch_id and not s.ended]
        pending = [s for s in current.shards if not s.batch_id]
        if (in_flight or pending) and self._deadline_passed(state):
            raise JobError(
                f"the job's deadline {state.deadline} passed with {len(in_flight)} batch(es) processing "
                f"({', '.join(s.batch_id or '' for s in in_flight) or 'none'}) and {len(pending)} not created; "
                "raise timeout, or cancel them and start afresh",
                retryable=False,
            )
        for shard in pending:
            if len(in_flight) >= self.settings.max_batches_in_flight:
                break
            try:
                created = self._ledger(shard, state).resume_or_create(partial(self.storage.body, shard))
            except CreateFailed as exc:
                if exc.declined and in_flight:
                    self.log.warning("The API declined a create for now (%s); waiting for batches in flight", exc)
                    break
                raise JobError(f"creating the batch for {shard.name} failed: {exc}", retryable=exc.retryable) from None
            self.log.info(
                "Batch %s for %s (%s requests, round %d): %s",
                created.batch_id,
                shard.name,
                f"{shard.requests:,}",
                current.index,
                created.how,
            )
            in_flight.append(shard)
        if not in_flight:
            return None
        still_pending = any(not s.batch_id for s in current.shards)
        progress = self.progress(state)
        self.log.info("%s; waiting", progress.describe())
        return Wait(
            batch_ids=[s.batch_id for s in in_flight if s.batch_id],
            wait_for="any" if still_pending else "all",
            deadline=state.deadline,
            progress=progress,
        )

    def _ledger(self, shard: ShardState, state: JobState) -> CreateLedger:
        return CreateLedger(
            self.calls,
            _ShardSlot(shard, self._save),
            id_key="batch_id",
            attempt_key="attempt",
            settings=self.settings.recovery,
            known_ids=state.known_batch_ids,
            durable=True,
            log=self.log,
            sleep=self.sleep,
            now=self.now,
        )

    def _close_round(self, current: RoundState, state: JobState) -> None:
        """Every batch of the round ended: find what to send again, and plan the next round."""
        resend: set[str] = set()
        counts: dict[str, int] = {}
        permanent: dict[str, int] = {}
        for shard in current.shards:
            shard_counts = shard.counts or {}
            errored = shard_counts.get("errored", 0)
            expired = shard_counts.get("expired", 0) if self.settings.retry_expired else 0
            if not errored and not expired:
                continue
            assert shard.batch_id is not None
            scan = self.storage.scan_for_retries(
                shard.batch_id,
                self.calls.iter_result_bytes(shard.batch_id, chunk_size=1 << 20),
                retry_error_types=self.settings.retry_error_types,
                retry_expired=self.settings.retry_expired,
            )
            shard.results_copy, shard.results_copy_bytes = scan.copy, scan.copy_bytes
            resend |= scan.ids
            for kind, n in scan.counts.items():
                counts[kind] = counts.get(kind, 0) + n
            for kind, n in scan.permanent_errors.items():
                permanent[kind] = permanent.get(kind, 0) + n
        current.permanent_errors = permanent
        if resend and current.index < self.settings.max_retry_rounds:
            ids_name = f"round-{current.index + 1}/resent_ids.txt"
            self.storage.write_ids(ids_name, resend)
            shards = self.storage.select(current.index + 1, current.shards, resend)
            current.resent_ids = ids_name
            current.resent_counts = counts
            current.closed = True
            state.rounds.append(RoundState(index=current.index + 1, shards=[_shard(s) for s in shards]))
            self._save()
            self.log.info(
                "Round %d ended: sending %s request(s) again in round %d (%s)%s",
                current.index,
                f"{len(resend):,}",
                current.index + 1,
                _counts_text(counts),
                f"; not retried: {_counts_text(permanent)}" if permanent else "",
            )
            return
        current.closed = True
        self._save()
        if resend:
            self.log.warning(
                "Round %d ended with %s retryable request(s) left, but max_retry_rounds=%d is reached",
                current.index,
                f"{len(resend):,}",
                self.settings.max_retry_rounds,
            )

    # -- the end -------------------------------------------------------------------------------

    def _export(self, state: JobState) -> dict[str, Any]:
        sources: list[ExportSource] = []
        totals = dict.fromkeys(RESULT_TYPES, 0)
        for round_ in state.rounds:
            drop = self.storage.read_ids(round_.resent_ids) if round_.resent_ids else set()
            for shard in round_.shards:
                assert shard.batch_id is not None
                sources.append(
                    ExportSource(shard.batch_id, round_.index, drop, shard.results_copy, shard.results_copy_bytes)
                )
                for kind, n in (shard.counts or {}).items():
                    if kind in totals:
                        totals[kind] += n
            for kind, n in round_.resent_counts.items():
                totals[kind] -= n
        expected = RequestCounts.from_dict(totals)
        extra = self._manifest_extra(state, expected)
        summary = self.storage.export(
            sources,
            lambda batch_id: self.calls.iter_result_bytes(batch_id, chunk_size=1 << 20),
            expected,
            extra,
        )
        state.exports += 1
        self._save()
        if not self.settings.keep_work_files:
            shards = [shard for _, shard in state.all_shards()]
            self.storage.remove([s.name for s in shards] + [s.results_copy for s in shards if s.results_copy])
        summary = {**summary, "job": {k: extra["job"][k] for k in ("rounds", "batches", "retried")}}
        self._apply_outcome(expected, state, summary)
        return summary

    def _manifest_extra(self, state: JobState, expected: RequestCounts) -> dict[str, Any]:
        batches = [
            {
                "batch_id": shard.batch_id,
                "round": round_.index,
                "shard": shard.name,
                "requests": shard.requests,
                "counts": shard.counts,
            }
            for round_, shard in state.all_shards()
        ]
        retried = [
            {
                "round": round_.index + 1,
                "requests": sum(round_.resent_counts.values()),
                "reasons": dict(round_.resent_counts),
                "outcome": _merge_counts(s.counts or {} for s in following.shards),
            }
            for round_, following in zip(state.rounds, state.rounds[1:], strict=False)
            if round_.resent_ids
        ]
        return {
            "job": {
                "identity": state.identity,
                "planned_at": state.planned_at,
                "deadline": state.deadline,
                "total_requests": state.total_requests,
                "rounds": len(state.rounds),
                "batches": len(batches),
                "retried": retried,
                "batch_list": batches,
                "final_counts": expected.to_dict(),
                "not_retried_errors": _merge_counts(r.permanent_errors for r in state.rounds),
            },
            **({"estimate": state.estimate} if state.estimate else {}),
        }

    def _apply_outcome(self, expected: RequestCounts, state: JobState, summary: dict[str, Any]) -> None:
        ratio_limit = self.settings.max_errored_ratio
        total = expected.total
        ratio = expected.errored / total if total else 0.0
        text = (
            f"job results landed at {summary.get('destination')}: {_counts_text(expected.to_dict())} "
            f"of {total:,} requests after {len(state.rounds)} round(s)"
        )
        if ratio_limit is not None and ratio > ratio_limit:
            by_type = _merge_counts(r.permanent_errors for r in state.rounds)
            raise JobError(
                f"{text}; failing: errored ratio {ratio:.2%} is above max_errored_ratio {ratio_limit:.2%}"
                + (f" (errors never retried: {_counts_text(by_type)})" if by_type else "")
                + ". The results, errored lines included, are published: see the manifest.",
                retryable=False,
            )
        self.log.info("%s", text)

    # -- progress ------------------------------------------------------------------------------

    def progress(self, state: JobState | None = None) -> JobProgress:
        state = state or self.state
        assert state is not None
        current = state.rounds[-1]
        done = 0
        for _, shard in state.all_shards():
            if shard.ended and shard.counts:
                done += sum(shard.counts.values()) - (shard.counts.get("processing", 0))
        # Requests of earlier rounds that were sent again count once, in their last round.
        done -= sum(sum(r.resent_counts.values()) for r in state.rounds)
        return JobProgress(
            batches=len(current.shards),
            batches_ended=sum(1 for s in current.shards if s.ended),
            requests=state.total_requests,
            requests_done=max(0, done),
            round=current.index,
        )


def _shard(data: Mapping[str, Any]) -> ShardState:
    return ShardState(name=str(data["name"]), requests=int(data["requests"]), body_bytes=int(data["body_bytes"]))


def _counts_text(counts: Mapping[str, int] | None) -> str:
    return ", ".join(f"{n:,} {kind}" for kind, n in (counts or {}).items() if n) or "nothing"


def _merge_counts(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in parts:
        for kind, n in part.items():
            merged[kind] = merged.get(kind, 0) + n
    return merged


def _describe_inputs(inputs: list[dict[str, Any]]) -> str:
    if not inputs:
        return "no files"
    first = inputs[0]
    more = f" and {len(inputs) - 1} more" if len(inputs) > 1 else ""
    return f"{first.get('uri')} ({first.get('size')} bytes){more}"

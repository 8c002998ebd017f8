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

import pendulum

from airflow_provider_anthropix.api.digests import ContentChanged, describe_id_mismatch, digest_of_ids
from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.models import RESULT_TYPES, EncodedBody, MessageBatch, RequestCounts
from airflow_provider_anthropix.api.plan import PlanOptions
from airflow_provider_anthropix.workflow.journal import (
    JOURNAL_VERSION,
    BudgetStop,
    JobError,
    JobState,
    JournalError,
    RoundState,
    ShardState,
    not_sent_ids_name,
    read_journal,
    resent_ids_name,
    state_to_dict,
)
from airflow_provider_anthropix.workflow.ledger import BatchCalls, CreateFailed, CreateLedger, RecoverySettings
from airflow_provider_anthropix.workflow.outcome import RETRYABLE_ERROR_TYPES

__all__ = [
    "JOURNAL_VERSION",
    "Done",
    "ExportSource",
    "JobCalls",
    "JobError",
    "JobProgress",
    "JobRunner",
    "JobSettings",
    "JobState",
    "JobStorage",
    "JournalError",
    "PlanOptions",
    "RoundBudget",
    "RoundState",
    "ShardState",
    "Wait",
    "job_key",
]

# -- what the job needs from the outside -------------------------------------------------------------


class JobCalls(BatchCalls, Protocol):
    """The API calls of a job (the hook has them)."""

    def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = ...) -> Iterator[bytes]: ...


class RetryScanResult(Protocol):
    """What a scan of one batch's results found: ids to send again, their result types, other errors.

    ``ids_digest`` digests every line's custom_id (checked against the shard's); ``tokens_by_model``
    is the usage of the succeeded requests; ``copy`` names the file the scanned bytes were kept in
    (``copy_bytes`` long, content digest ``copy_digest``), or is None.
    """

    ids: set[str]
    counts: dict[str, int]
    permanent_errors: dict[str, int]
    ids_digest: str
    tokens_by_model: dict[str, dict[str, int]]
    copy: str | None
    copy_bytes: int
    copy_digest: str


@dataclass(frozen=True)
class ExportSource:
    """One batch's results in the merged export, and the custom_ids its stream leaves out.

    ``ids_digest`` is the shard's: the batch's stream must give the same before anything is
    published. ``copy`` is the results file the round's end kept (content digest
    ``copy_digest``); the export reads it instead of downloading the results again when it is
    still exactly those bytes.
    """

    batch_id: str
    shard: str
    round: int
    drop: Collection[str]
    ids_digest: str
    copy: str | None = None
    copy_digest: str | None = None


class JobStorage(Protocol):
    """The job's files: journal, shards, id lists and the merged export (``io/`` implements it).

    Read errors of the journal are ``ValueError`` (the runner names the file and fails for good).
    """

    @property
    def uri(self) -> str: ...

    def check_folder(self) -> None: ...

    def load_journal(self) -> Any: ...

    def save_journal(self, data: dict[str, Any]) -> None: ...

    def fingerprint(self, *, content: bool) -> list[dict[str, Any]]: ...

    def split(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The shards, and the input's fingerprint as ``fingerprint(content=True)`` gives it, taken by the split's read."""
        ...

    def digest_of(self, name: str) -> str | None: ...

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


def _digest(material: Any, length: int) -> str:
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def job_key(*, destination: str, requests_path: str, plan: PlanOptions, given: str | None = None) -> str:
    """The job's identity, which names its working folder.

    By default: where its results land, which input it reads and the options that shape it, so
    every DAG run for the same date (a re-run, a backfill, a cleared and deleted run) finds the
    same job and pays nothing again. The input's *contents* are checked inside the job (its
    fingerprint): a changed input is a new job in the same folder. ``given`` (the operator's
    templated ``job_key``) replaces all of it, e.g. ``{{ run_id }}`` for one job per run.
    """
    if given is not None:
        return _digest({"job_key": given}, 24)
    return _digest({"destination": destination, "requests_path": requests_path, "plan": plan.to_dict()}, 24)


@dataclass(frozen=True)
class RoundBudget:
    """The budget gate's answer for a retry round: send it, or land what the job has and fail.

    :param allowed: whether the round may be sent.
    :param spent_usd: the actual cost of the job's ended batches.
    :param round_estimate_usd: the round's estimate on ``basis``.
    :param budget_usd: ``max_cost_usd``.
    :param basis: ``worst_case`` or ``expected``.
    """

    allowed: bool
    spent_usd: float
    round_estimate_usd: float
    budget_usd: float
    basis: str


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
    :param plan: the options that shape the shards (part of the fingerprint).
    :param fixed_identity: the job's identity was given (``job_key`` or ``work_prefix``): a changed
        input is refused instead of starting a new job in the same folder.
    :param scan_succeeded: read every ended batch's results at the round's end, not only those with
        errors or expiries: the storage's scan may find succeeded answers to send again (the table
        job's ``retry_invalid_output``).
    """

    max_batches_in_flight: int = 10
    retry_error_types: tuple[str, ...] = RETRYABLE_ERROR_TYPES
    retry_expired: bool = True
    max_retry_rounds: int = 2
    timeout: float = 48 * 3600.0
    max_errored_ratio: float | None = 0.0
    keep_work_files: bool = False
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    plan: PlanOptions = field(default_factory=PlanOptions)
    fixed_identity: bool = False
    scan_succeeded: bool = False

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
    :param key: the job's identity (:func:`job_key`); a journal of another key is refused.
    :param identity: who planned the job (dag, task, run, map index), recorded for people.
    :param before_first_create: called with the planned state while no batch exists yet (the cost
        estimate and budget gate); may raise to stop the job; what it returns is kept in the
        journal (``estimate``) and the manifest. Called again on a resumed job until it returns.
    :param before_retry_round: called with the state and a planned retry round before it is sent;
        returns the budget gate's answer (None: no budget). A round that is not allowed is not
        sent: the job lands what it has, then fails saying which requests were not sent again.
    :param observe: told what happened, for the caller's metrics: ``"batch_adopted"`` (a create whose
        answer was lost found its batch), ``"retry_round"`` (a retry round was planned and is sent) and
        ``"exported"`` (the merged results and their manifest are published; the outcome is judged after).
    """

    def __init__(
        self,
        calls: JobCalls,
        storage: JobStorage,
        settings: JobSettings,
        *,
        key: str,
        identity: Mapping[str, str],
        log: logging.Logger | Any = None,
        now: Callable[[], pendulum.DateTime] = lambda: pendulum.now("UTC"),
        sleep: Callable[[float], None] = time.sleep,
        before_first_create: Callable[[JobState], dict[str, Any] | None] | None = None,
        before_retry_round: Callable[[JobState, RoundState], RoundBudget | None] | None = None,
        observe: Callable[[str], None] | None = None,
    ) -> None:
        self.before_first_create = before_first_create
        self.observe = observe or (lambda event: None)
        self.before_retry_round = before_retry_round
        self.calls = calls
        self.storage = storage
        self.settings = settings
        self.key = key
        self.identity = dict(identity)
        self.log = log or logging.getLogger(__name__)
        self.now = now
        self.sleep = sleep
        self.state: JobState | None = None
        #: Shard files this runner wrote itself: no need to check them against their digests again.
        self._fresh: set[str] = set()

    # -- journal -----------------------------------------------------------------------------

    def _save(self) -> None:
        assert self.state is not None
        self.storage.save_journal(state_to_dict(self.state))

    def _fingerprint(self, inputs: list[dict[str, Any]]) -> str:
        contents = [{"uri": i.get("uri"), "content": i.get("content")} for i in inputs]
        return _digest({"inputs": contents, "options": self.settings.plan.to_dict()}, 32)

    def _journal_where(self) -> str:
        return f"{self.storage.uri}/job.json"

    def _load(self) -> JobState | None:
        try:
            raw = self.storage.load_journal()
        except ValueError as exc:
            raise JournalError(self._journal_where(), f"cannot be read ({exc})", folder=self.storage.uri) from None
        if raw is None:
            return None
        state = read_journal(raw, where=self._journal_where(), folder=self.storage.uri)
        if state.key != self.key:
            raise JournalError(
                self._journal_where(),
                "belongs to another job (its key is not this job's: it was copied here, or the working folder "
                "is shared by two jobs)",
                folder=self.storage.uri,
            )
        return state

    def _same_input(self, state: JobState) -> bool:
        """Whether the input is still the one the job was planned from: cheap stamps first, contents if they differ."""
        cheap = self.storage.fingerprint(content=False)
        stamps = [{k: i.get(k) for k in ("uri", "size", "stamp")} for i in state.inputs]
        if cheap == stamps:
            return True
        return self._fingerprint(self.storage.fingerprint(content=True)) == state.fingerprint

    def _load_or_plan(self) -> JobState:
        try:
            self.storage.check_folder()
        except ValueError as exc:
            raise JobError(str(exc), retryable=False) from None
        state = self._load()
        if state is not None:
            if self._same_input(state):
                return state
            if self.settings.fixed_identity:
                raise JobError(
                    "the input or the options changed since this job was planned (planned from "
                    f"{_describe_inputs(state.inputs)}); the job does not mix two inputs. Restore the input, "
                    "or start afresh by removing the job's working folder "
                    f"{self.storage.uri} or giving the job another job_key.",
                    retryable=False,
                )
            self._supersede(state)
        return self._plan()

    def _supersede(self, state: JobState) -> None:
        """The input changed under the job's default identity: this is a new job; the old one's files go."""
        processing = [s.batch_id for _, s in state.all_shards() if s.batch_id and not s.ended]
        self.log.warning(
            "The input changed since the job planned at %s (%s): planning a new job in the same working folder; "
            "its results will replace the earlier job's at the destination.%s",
            state.planned_at,
            _describe_inputs(state.inputs),
            f" The earlier job's batches {', '.join(processing)} are still processing (and billed): cancel them "
            "if they are not wanted."
            if processing
            else "",
        )
        names = [s.name for _, s in state.all_shards()]
        names += [s.results_copy for _, s in state.all_shards() if s.results_copy]
        names += [r.resent_ids for r in state.rounds if r.resent_ids]
        if state.budget_stop is not None:
            names.append(state.budget_stop.ids_file)
        self.storage.remove(names)

    def _plan(self) -> JobState:
        started = time.monotonic()
        shards, inputs = self.storage.split()
        self._fresh.update(str(s["name"]) for s in shards)
        planned = self.now()
        state = JobState(
            key=self.key,
            identity=self.identity,
            fingerprint=self._fingerprint(inputs),
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
        if self.before_first_create is not None and state.estimate is None and not state.anything_sent():
            state.estimate = self.before_first_create(state) or {}
            self._save()
        if state.budget_stop is not None:  # stopped by the budget before: try the round again (a larger or no budget)
            self._retry_after_budget_stop(state)
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
                    if batch.request_counts.total != shard.requests:
                        raise JobError(
                            f"batch {batch.id} holds {batch.request_counts.total:,} requests, but {shard.name}, "
                            f"which the journal pairs it with, holds {shard.requests:,}: it is not this shard's "
                            f"batch. Nothing was exported; check the journal {self._journal_where()}, or remove the "
                            "working folder to start afresh",
                            retryable=False,
                        )
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
                created = self._ledger(shard, state).resume_or_create(partial(self._checked_body, state, shard))
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
            if created.how == "adopted":
                self.observe("batch_adopted")
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

    def _checked_body(self, state: JobState, shard: ShardState) -> EncodedBody:
        """The shard's create body, from a file checked against its digest (derived again when it differs)."""
        self._ensure_shard_file(state, shard)
        return self.storage.body(shard)

    def _ensure_shard_file(self, state: JobState, shard: ShardState) -> None:
        if shard.name in self._fresh or self.storage.digest_of(shard.name) == shard.digest:
            return
        round_index = next(r.index for r, s in state.all_shards() if s is shard)
        self.log.warning(
            "Shard file %s/%s is missing or not the bytes the plan recorded; deriving round %d's shards again",
            self.storage.uri,
            shard.name,
            round_index,
        )
        if round_index == 0:
            fresh, _ = self.storage.split()
        else:
            # Every round's lines are copies of round 0's, in round 0's order: select from there.
            for first in state.rounds[0].shards:
                self._ensure_shard_file(state, first)
            ids = self._read_ids_checked(state.rounds[round_index - 1])
            fresh = self.storage.select(round_index, state.rounds[0].shards, ids)
        self._fresh.update(str(s["name"]) for s in fresh)
        planned = [_shard_facts(s) for s in state.rounds[round_index].shards]
        if [_shard_facts(_shard(s)) for s in fresh] != planned:
            raise JobError(
                f"round {round_index}'s shards, derived again, differ from the plan in the journal "
                f"{self._journal_where()}: the input changed or the journal was edited. Nothing was sent; remove the "
                "working folder to start the job afresh",
                retryable=False,
            )

    def _read_ids_checked(self, round_: RoundState) -> set[str]:
        assert round_.resent_ids is not None
        problem: str | None = None
        try:
            ids = self.storage.read_ids(round_.resent_ids)
        except (OSError, ValueError) as exc:
            ids, problem = set(), f"cannot be read ({type(exc).__name__})"
        if problem is None and digest_of_ids(ids) != round_.resent_ids_digest:
            problem = "is not the list the journal recorded"
        if problem:
            raise JobError(
                f"{self.storage.uri}/{round_.resent_ids} {problem}; it says which results of round {round_.index} were "
                "replaced by a retry. Restore it, or remove the working folder to start the job afresh",
                retryable=False,
            )
        return ids

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

    # -- the end of a round ----------------------------------------------------------------------

    def _scan(self, shard: ShardState) -> RetryScanResult:
        """Read one ended batch's results (kept as a copy for the export), checked against the shard's ids."""
        assert shard.batch_id is not None
        scan = self.storage.scan_for_retries(
            shard.batch_id,
            self.calls.iter_result_bytes(shard.batch_id, chunk_size=1 << 20),
            retry_error_types=self.settings.retry_error_types,
            retry_expired=self.settings.retry_expired,
        )
        if scan.ids_digest != shard.ids_digest:
            if scan.copy:
                self.storage.remove([scan.copy])
            raise JobError(
                describe_id_mismatch(f"batch {shard.batch_id} ({shard.name})", shard.ids_digest, scan.ids_digest),
                retryable=False,
            )
        shard.results_copy, shard.results_copy_bytes = scan.copy, scan.copy_bytes
        shard.results_copy_digest = scan.copy_digest or None
        shard.tokens = scan.tokens_by_model
        return scan

    def _close_round(self, current: RoundState, state: JobState) -> None:
        """Every batch of the round ended: find what to send again, and plan the next round."""
        resend: set[str] = set()
        counts: dict[str, int] = {}
        permanent: dict[str, int] = {}
        for shard in current.shards:
            shard_counts = shard.counts or {}
            errored = shard_counts.get("errored", 0)
            expired = shard_counts.get("expired", 0) if self.settings.retry_expired else 0
            if not errored and not expired and not self.settings.scan_succeeded:
                continue
            scan = self._scan(shard)
            resend |= scan.ids
            for kind, n in scan.counts.items():
                counts[kind] = counts.get(kind, 0) + n
            for kind, n in scan.permanent_errors.items():
                permanent[kind] = permanent.get(kind, 0) + n
        current.permanent_errors = permanent
        if resend and current.index < self.settings.max_retry_rounds:
            self._start_retry_round(current, state, resend, counts)
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

    def _start_retry_round(
        self, current: RoundState, state: JobState, resend: set[str], counts: dict[str, int]
    ) -> None:
        """Plan the next round from ``resend``; send it only if the budget gate allows it."""
        try:
            made = self.storage.select(current.index + 1, current.shards, resend)
        except ContentChanged as exc:
            # A source shard is not what the plan recorded: derive it again, then select from it.
            for shard in current.shards:
                if shard.name in exc.names:
                    self._fresh.discard(shard.name)
                    self._ensure_shard_file(state, shard)
            made = self.storage.select(current.index + 1, current.shards, resend)
        self._fresh.update(str(s["name"]) for s in made)
        shards = [_shard(s) for s in made]
        following = RoundState(index=current.index + 1, shards=shards)
        if self.before_retry_round is not None:
            for round_ in state.rounds:
                for shard in round_.shards:
                    if shard.ended and shard.tokens is None:
                        self._scan(shard)  # its actual cost (and a copy the export reads)
            self._save()
            gate = self.before_retry_round(state, following)
            if gate is not None and not gate.allowed:
                self._stop_for_budget(current, state, following, resend, counts, gate)
                return
        ids_name = resent_ids_name(current.index)
        self.storage.write_ids(ids_name, resend)
        current.resent_ids = ids_name
        current.resent_ids_digest = digest_of_ids(resend)
        current.resent_counts = counts
        current.closed = True
        state.budget_stop = None
        state.rounds.append(following)
        self._save()
        self.observe("retry_round")
        self.log.info(
            "Round %d ended: sending %s request(s) again in round %d (%s)%s",
            current.index,
            f"{len(resend):,}",
            current.index + 1,
            _counts_text(counts),
            f"; not retried: {_counts_text(current.permanent_errors)}" if current.permanent_errors else "",
        )

    def _stop_for_budget(
        self,
        current: RoundState,
        state: JobState,
        following: RoundState,
        resend: set[str],
        counts: dict[str, int],
        gate: RoundBudget,
    ) -> None:
        self.storage.remove([s.name for s in following.shards])
        ids_name = not_sent_ids_name(following.index)
        self.storage.write_ids(ids_name, resend)
        state.budget_stop = BudgetStop(
            round=following.index,
            requests=len(resend),
            ids_file=ids_name,
            ids_digest=digest_of_ids(resend),
            counts=counts,
            spent_usd=gate.spent_usd,
            round_estimate_usd=gate.round_estimate_usd,
            budget_usd=gate.budget_usd,
            basis=gate.basis,
        )
        current.closed = True
        self._save()
        self.log.warning("%s", _budget_text(state.budget_stop))

    def _retry_after_budget_stop(self, state: JobState) -> None:
        """A job stopped by the budget, run again (perhaps with a larger budget): try the round again."""
        stop = state.budget_stop
        assert stop is not None
        current = state.rounds[-1]
        if current.index != stop.round - 1 or not current.closed:
            raise JobError(
                f"the journal {self._journal_where()} records a budget stop before round {stop.round}, but its last "
                f"round is {current.index}; remove the working folder to start afresh",
                retryable=False,
            )
        try:
            ids = self.storage.read_ids(stop.ids_file)
        except (OSError, ValueError):
            ids = set()
        if digest_of_ids(ids) != stop.ids_digest:
            raise JobError(
                f"{self.storage.uri}/{stop.ids_file} is not the list of requests the budget stop recorded; restore "
                "it, or remove the working folder to start afresh",
                retryable=False,
            )
        self._start_retry_round(current, state, ids, dict(stop.counts))

    # -- the end -------------------------------------------------------------------------------

    def _export(self, state: JobState) -> dict[str, Any]:
        sources: list[ExportSource] = []
        totals = dict.fromkeys(RESULT_TYPES, 0)
        for round_ in state.rounds:
            drop = self._read_ids_checked(round_) if round_.resent_ids else set()
            for shard in round_.shards:
                assert shard.batch_id is not None
                sources.append(
                    ExportSource(
                        batch_id=shard.batch_id,
                        shard=shard.name,
                        round=round_.index,
                        drop=drop,
                        ids_digest=shard.ids_digest,
                        copy=shard.results_copy,
                        copy_digest=shard.results_copy_digest,
                    )
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
        self.observe("exported")
        if not self.settings.keep_work_files and state.budget_stop is None:
            shards = [shard for _, shard in state.all_shards()]
            self.storage.remove([s.name for s in shards] + [s.results_copy for s in shards if s.results_copy])
        summary = {**summary, "job": {k: extra["job"][k] for k in ("rounds", "batches", "retried", "not_sent")}}
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
        stop = state.budget_stop
        not_sent = (
            {
                "requests": stop.requests,
                "reasons": dict(stop.counts),
                "why": "max_cost_usd",
                "spent_usd": stop.spent_usd,
                "round_estimate_usd": stop.round_estimate_usd,
                "budget_usd": stop.budget_usd,
                "basis": stop.basis,
            }
            if stop is not None
            else None
        )
        return {
            "job": {
                "key": state.key,
                "fingerprint": state.fingerprint,
                "identity": state.identity,
                "planned_at": state.planned_at,
                "deadline": state.deadline,
                "total_requests": state.total_requests,
                "rounds": len(state.rounds),
                "batches": len(batches),
                "retried": retried,
                "not_sent": not_sent,
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
        if state.budget_stop is not None:
            raise JobError(
                f"{text}; failing: {_budget_text(state.budget_stop)} The results, with the last answer of every "
                f"request, are published: see the manifest. The ids are listed in {self.storage.uri}/"
                f"{state.budget_stop.ids_file}; raise max_cost_usd and clear the task to send them.",
                retryable=False,
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


def _budget_text(stop: BudgetStop) -> str:
    return (
        f"{stop.requests:,} request(s) ({_counts_text(stop.counts)}) were not sent again in round {stop.round}: "
        f"the job's ended batches cost ${stop.spent_usd:.4f} and the round's {stop.basis.replace('_', ' ')} "
        f"estimate is ${stop.round_estimate_usd:.4f}, ${stop.spent_usd + stop.round_estimate_usd:.4f} in all, "
        f"over max_cost_usd ${stop.budget_usd:.4f}."
    )


def _shard_facts(shard: ShardState) -> tuple[str, int, int, str, str]:
    return (shard.name, shard.requests, shard.body_bytes, shard.digest, shard.ids_digest)


def _shard(data: Mapping[str, Any]) -> ShardState:
    return ShardState(
        name=str(data["name"]),
        requests=int(data["requests"]),
        body_bytes=int(data["body_bytes"]),
        digest=str(data["digest"]),
        ids_digest=str(data["ids_digest"]),
    )


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

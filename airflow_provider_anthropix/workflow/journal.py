"""A batch job's journal: what it holds, and the checks it must pass before the job acts on it.

The journal (``job.json`` in the job's working folder) is the job's memory across tries,
deferrals and machines. It is also input from an untrusted store: an edited, truncated or
foreign journal must never make the job pay twice, publish another job's results or touch a
file outside its folder. So every journal read back is decoded into typed structs and then
checked as a whole (:func:`read_journal`): names and ids by pattern and uniqueness, rounds in
order, dates that parse, digests that look like digests, counts that add up. A journal that
fails is a :class:`JournalError`, which names the file, says what is wrong and what to do;
it is never retried (another try reads the same file).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import pendulum

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.models import RESULT_TYPES

#: Version 2 added content and id digests, the job key and the budget record.
JOURNAL_VERSION = 2

#: A batch id as the API makes them (and nothing that could reach another URL path).
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ID_DIGEST = re.compile(r"[0-9]{1,12}:[0-9a-f]{32}")
_COUNT_KEYS = frozenset((*RESULT_TYPES, "processing"))


class JobError(AnthropixError):
    """The job cannot go on this try. ``retryable`` says whether another try of the task may."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class JournalError(JobError):
    """The journal cannot be read or does not hold together; another try would read the same file."""

    def __init__(self, where: str, problem: str, *, folder: str) -> None:
        super().__init__(
            f"the job's journal {where} {problem}. Restore the journal (or the working folder) from a backup, or "
            f"remove the working folder {folder} to start the job afresh: its requests are then sent, and paid for, "
            "again",
            retryable=False,
        )


class ShardState(msgspec.Struct, kw_only=True):
    """One shard of one round, and the batch made from it."""

    name: str
    requests: int
    body_bytes: int
    #: Content digest of the shard file and the digest of its custom_ids (``api/digests.py``).
    digest: str
    ids_digest: str
    batch_id: str | None = None
    attempt: dict[str, Any] | None = None
    ended: bool = False
    counts: dict[str, int] | None = None
    #: The batch's results as read at the round's end, kept in the working folder for the export.
    results_copy: str | None = None
    results_copy_bytes: int = 0
    results_copy_digest: str | None = None
    #: Token usage per model of the batch's succeeded requests, once its results were scanned.
    tokens: dict[str, dict[str, int]] | None = None


class BudgetStop(msgspec.Struct, kw_only=True):
    """A retry round that was not sent because it would have gone over ``max_cost_usd``."""

    round: int
    requests: int
    ids_file: str
    ids_digest: str
    #: Result types of the requests not sent, as the round end counted them.
    counts: dict[str, int]
    spent_usd: float
    round_estimate_usd: float
    budget_usd: float
    basis: str


class RoundState(msgspec.Struct, kw_only=True):
    """A round: its shards; once closed, which of its requests the next round sent again."""

    index: int
    shards: list[ShardState]
    closed: bool = False
    #: File listing the custom_ids of this round that the next round sent again (their lines here are dropped).
    resent_ids: str | None = None
    resent_ids_digest: str | None = None
    #: Result types of those dropped lines, to know how many lines the merged export holds.
    resent_counts: dict[str, int] = msgspec.field(default_factory=dict)
    #: Errors of types that are never retried, by type.
    permanent_errors: dict[str, int] = msgspec.field(default_factory=dict)


class JobState(msgspec.Struct, kw_only=True):
    """Everything a resumed job needs, as stored in the journal."""

    version: int = JOURNAL_VERSION
    #: The job's identity (see ``JobIdentity``): the working folder's name is derived from it.
    key: str
    #: The DAG run, task and map index that planned the job (for people; not checked).
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
    budget_stop: BudgetStop | None = None

    def all_shards(self) -> Iterator[tuple[RoundState, ShardState]]:
        for round_ in self.rounds:
            for shard in round_.shards:
                yield round_, shard

    def known_batch_ids(self) -> set[str]:
        return {shard.batch_id for _, shard in self.all_shards() if shard.batch_id}

    def anything_sent(self) -> bool:
        return any(shard.batch_id or shard.attempt for _, shard in self.all_shards())


_ENCODER = msgspec.json.Encoder()


def state_to_dict(state: JobState) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(_ENCODER.encode(state))
    return decoded


def shard_name(round_index: int, number: int) -> str:
    return f"round-{round_index}/shard-{number:05d}.jsonl"


def resent_ids_name(round_index: int) -> str:
    """The id list of the requests round ``round_index`` sends again (in the next round's folder)."""
    return f"round-{round_index + 1}/resent_ids.txt"


def not_sent_ids_name(round_index: int) -> str:
    return f"round-{round_index}/not_sent_ids.txt"


def results_copy_name(batch_id: str) -> str:
    return f"results/{batch_id}.jsonl"


def read_journal(raw: Any, *, where: str, folder: str) -> JobState:
    """The journal's state, checked; :class:`JournalError` naming ``where`` when it does not hold together."""
    if not isinstance(raw, Mapping):
        raise JournalError(where, f"is a JSON {type(raw).__name__}, not a job journal (a JSON object)", folder=folder)
    version = raw.get("version")
    if version != JOURNAL_VERSION:
        raise JournalError(
            where,
            f"has version {version!r}; this release reads version {JOURNAL_VERSION} (finish the job with the "
            "release that started it)",
            folder=folder,
        )
    try:
        state = msgspec.convert(raw, JobState)
    except msgspec.ValidationError as exc:
        raise JournalError(where, f"does not have the journal's shape ({exc})", folder=folder) from None
    problem = journal_problem(state)
    if problem:
        raise JournalError(where, problem, folder=folder)
    return state


def journal_problem(state: JobState) -> str | None:
    """The first thing in ``state`` that cannot be trusted, in words; None when it holds together."""
    if not state.rounds:
        return "has no rounds"
    for when in (state.planned_at, state.deadline):
        try:
            if not isinstance(pendulum.parse(when), pendulum.DateTime):
                return f"has a date that is not a date and time ({when[:40]!r})"
        except (ValueError, TypeError, OverflowError):
            return f"has a date that does not parse ({when[:40]!r})"
    names: set[str] = set()
    batch_ids: dict[str, str] = {}
    for position, round_ in enumerate(state.rounds):
        if round_.index != position:
            return f"lists round {round_.index} in position {position}"
        if not round_.shards:
            return f"has no shards in round {position}"
        if position < len(state.rounds) - 1 and not round_.closed:
            return f"has round {position} open while a later round exists"
        if round_.resent_ids is not None:
            if round_.resent_ids != resent_ids_name(position) or position == len(state.rounds) - 1:
                return f"names {round_.resent_ids[:80]!r} as round {position}'s resent ids"
            if not round_.resent_ids_digest or not _ID_DIGEST.fullmatch(round_.resent_ids_digest):
                return f"has no usable digest of round {position}'s resent ids"
        elif position < len(state.rounds) - 1:
            return f"has round {position + 1} without the list of ids round {position} sent again"
        if not _counts_ok(round_.resent_counts) or not _counts_ok(round_.permanent_errors, any_key=True):
            return f"has counts that are not non-negative numbers in round {position}"
        for number, shard in enumerate(round_.shards):
            problem = _shard_problem(position, number, shard)
            if problem:
                return problem
            if shard.name in names:
                return f"names the shard file {shard.name} twice"
            names.add(shard.name)
            if shard.batch_id is not None:
                if shard.batch_id in batch_ids:
                    return f"pairs batch {shard.batch_id} with two shards ({batch_ids[shard.batch_id]}, {shard.name})"
                batch_ids[shard.batch_id] = shard.name
    stop = state.budget_stop
    if stop is not None and (
        stop.ids_file != not_sent_ids_name(stop.round) or not _ID_DIGEST.fullmatch(stop.ids_digest)
    ):
        return f"names {stop.ids_file[:80]!r} as the requests a budget stop did not send"
    if sum(s.requests for s in state.rounds[0].shards) != state.total_requests:
        return f"says {state.total_requests:,} requests, but its first round's shards hold another number"
    return None


def _shard_problem(round_index: int, number: int, shard: ShardState) -> str | None:
    where = f"round {round_index}, shard {number}"
    if shard.name != shard_name(round_index, number):
        return f"names {shard.name[:80]!r} as the file of {where} (expected {shard_name(round_index, number)})"
    if shard.requests < 1 or shard.body_bytes < 1:
        return f"has an empty or negative size for {shard.name}"
    if not _HEX64.fullmatch(shard.digest) or not _ID_DIGEST.fullmatch(shard.ids_digest):
        return f"has no usable digest for {shard.name}"
    if int(shard.ids_digest.partition(":")[0]) != shard.requests:
        return f"has an id digest of another size than {shard.name}'s {shard.requests:,} requests"
    if shard.batch_id is not None and not _BATCH_ID.fullmatch(shard.batch_id):
        return f"has a batch id for {shard.name} that is not one ({shard.batch_id[:80]!r})"
    if (shard.ended or shard.counts is not None) and shard.batch_id is None:
        return f"says {shard.name}'s batch ended, but names no batch"
    if shard.counts is not None and not _counts_ok(shard.counts):
        return f"has counts for {shard.name} that are not non-negative numbers of known result types"
    if shard.results_copy is not None:
        if shard.batch_id is None or shard.results_copy != results_copy_name(shard.batch_id):
            return f"names {shard.results_copy[:80]!r} as the results copy of {shard.name}"
        if not shard.results_copy_digest or not _HEX64.fullmatch(shard.results_copy_digest):
            return f"has no usable digest for the results copy of {shard.name}"
    return None


def _counts_ok(counts: Mapping[str, Any], *, any_key: bool = False) -> bool:
    return all(
        (any_key or key in _COUNT_KEYS) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
        for key, n in counts.items()
    )

"""Batches in memory and the clock that moves them: the emulator's whole model.

Progress is computed from the clock when a batch is looked at, not by a background
loop ticking every batch: a retrieve costs the same with 5 or 5,000 batches alive. The
only background work is rendering a batch's results once, when it ends, in a worker
thread, so the results endpoint then streams bytes already in memory.

Every method may be called from the server's event loop thread and from the test's
thread (through the context manager's handle), so the store is guarded by one lock held
only for short, non-blocking sections.
"""

from __future__ import annotations

import bisect
import heapq
import random
import threading
import time
from array import array
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from airflow_provider_anthropix.emulator.clock import Clock, rfc3339
from airflow_provider_anthropix.emulator.config import EmulatorConfig
from airflow_provider_anthropix.emulator.ids import IdMaker
from airflow_provider_anthropix.emulator.outcomes import (
    CANCELED,
    ERRORED,
    EXPIRED,
    SUCCEEDED,
    Entry,
    LineRenderer,
)

IN_PROGRESS = "in_progress"
CANCELING = "canceling"
ENDED = "ended"

# When two ends fall on the same instant, a batch that finished its work ended normally.
_REASON_RANK = {"done": 0, "canceled": 1, "expired": 2}


class EmulatorError(Exception):
    """A call the API would refuse; the app turns it into the error envelope."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers


class Batch:
    """One batch: its requests in processing order and the times that decide its state."""

    def __init__(
        self,
        batch_id: str,
        entries: list[Entry],
        *,
        created: float,
        config: EmulatorConfig,
    ) -> None:
        self.id = batch_id
        self.total = len(entries)
        # Requests forced to canceled/expired never "finish": they go last and wait for the end.
        normal = [e for e in entries if e.outcome in (SUCCEEDED, ERRORED)]
        forced = [e for e in entries if e.outcome not in (SUCCEEDED, ERRORED)]
        # Results come in no particular order, like the API's, but the same order for the same seed.
        random.Random(f"{config.seed}:{batch_id}").shuffle(normal)
        self.entries: list[Entry] | None = normal + forced
        self.n_normal = len(normal)
        self.forced_canceled = sum(1 for e in forced if e.outcome == CANCELED)
        self.forced_expired = len(forced) - self.forced_canceled
        # succeeded_before[k]: how many of the first k finished requests succeeded (O(1) counts).
        prefix = array("I", [0])
        running = 0
        for e in normal:
            running += e.outcome == SUCCEEDED
            prefix.append(running)
        self.succeeded_before = prefix
        self.created = created
        self.processing_seconds = config.processing_seconds
        self.cancel_seconds = config.cancel_seconds
        self.expires = created + config.expiry_seconds
        self.archive_at = created + config.archive_seconds
        self.cancel_at: float | None = None
        self.created_at = rfc3339(created)
        self.expires_at = rfc3339(self.expires)
        self.results: bytearray | None = None
        #: bumped whenever the served bytes change (admin re-render), so the etag changes with them
        self.generation = 0
        self.render_future: Future[bytearray] | None = None
        self.renderer = LineRenderer(batch_id=batch_id, seed=config.seed, result_bytes=config.result_bytes)
        self._end = self._compute_end()

    def _compute_end(self) -> tuple[float, str]:
        ends = [(self.created + self.processing_seconds, "done"), (self.expires, "expired")]
        if self.cancel_at is not None:
            ends.append((self.cancel_at + self.cancel_seconds, "canceled"))
        return min(ends, key=lambda end: (end[0], _REASON_RANK[end[1]]))

    @property
    def end_time(self) -> float:
        """When the batch ends (moves earlier if it is canceled)."""
        return self._end[0]

    def is_ended(self, now: float) -> bool:
        """True once processing_status is ``ended``."""
        return now >= self._end[0]

    def _finished(self, t: float) -> int:
        """How many normal requests have finished by time ``t``."""
        end, reason = self._end
        if t >= end and reason == "done":
            return self.n_normal
        t = min(t, end)
        if self.processing_seconds <= 0:
            return self.n_normal
        share = (t - self.created) / self.processing_seconds
        return max(0, min(self.n_normal, int(self.n_normal * share)))

    def counts(self, now: float) -> dict[str, int]:
        """``request_counts`` at ``now``; they always add up to the number of requests."""
        finished = self._finished(now)
        succeeded = self.succeeded_before[finished]
        counts = {"processing": 0, "succeeded": succeeded, "errored": finished - succeeded, "canceled": 0, "expired": 0}
        unfinished = self.n_normal - finished
        if self.is_ended(now):
            left_as = "expired" if self._end[1] == "expired" else "canceled"
            counts[left_as] += unfinished
            counts["canceled"] += self.forced_canceled
            counts["expired"] += self.forced_expired
        else:
            counts["processing"] = unfinished + self.forced_canceled + self.forced_expired
        return counts

    def status(self, now: float) -> str:
        """``processing_status`` at ``now``."""
        if self.is_ended(now):
            return ENDED
        return CANCELING if self.cancel_at is not None else IN_PROGRESS

    def to_dict(self, now: float, base_url: str, *, fresh: bool = False) -> dict[str, Any]:
        """The MessageBatch object; ``fresh`` renders it as create answers (nothing processed yet)."""
        ended = not fresh and self.is_ended(now)
        if fresh:
            counts = {"processing": self.total, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
            status = IN_PROGRESS
        else:
            counts = self.counts(now)
            status = self.status(now)
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "ended_at": rfc3339(self._end[0]) if ended else None,
            "cancel_initiated_at": rfc3339(self.cancel_at) if self.cancel_at is not None else None,
            "archived_at": rfc3339(self.archive_at) if now >= self.archive_at else None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }

    def render(self) -> bytearray:
        """Build the results JSONL once the batch has ended (run in a worker thread)."""
        entries = self.entries
        if entries is None:  # rendered already; the results were kept
            return self.results or bytearray()
        finished = self._finished(self._end[0])
        left_as = EXPIRED if self._end[1] == "expired" else CANCELED
        write = self.renderer.write
        out = bytearray()
        for i, entry in enumerate(entries):
            write(entry, entry.outcome if i < finished or i >= self.n_normal else left_as, out)
        self.results = out
        self.entries = None  # the prompts' digest is no longer needed
        return out


class BatchStore:
    """All batches of one emulator, newest last, plus the call statistics."""

    def __init__(self, config: EmulatorConfig, clock: Clock, ids: IdMaker) -> None:
        self.config = config
        self.clock = clock
        self.ids = ids
        self._lock = threading.Lock()
        self._batches: dict[str, Batch] = {}
        self._order: list[str] = []  # ids sort in creation order (counter-based), oldest first
        self._due: list[tuple[float, str]] = []  # heap of (end time, id) for proactive rendering
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anthropix-emulator-render")
        self.calls: Counter[str] = Counter()
        #: (endpoint, time.monotonic()) of the latest API calls, oldest first (tests check pacing with it)
        self.arrivals: deque[tuple[str, float]] = deque(maxlen=10_000)
        #: API calls per endpoint refused by the key or version check (not in ``calls``, no fault applied)
        self.rejected: Counter[str] = Counter()
        self.batches_created = 0
        #: custom_id -> how many batches have carried it (outcomes depend on the attempt)
        self._attempts: dict[str, int] = {}

    # -- attempts --------------------------------------------------------------------------
    def claim_attempts(self, custom_ids: list[str]) -> list[int]:
        """Count one more batch for each custom_id; return each one's attempt number (1 = first).

        Called once a create is valid and about to be stored, so a refused create uses none.
        """
        with self._lock:
            attempts = self._attempts
            claimed = []
            for custom_id in custom_ids:
                attempt = attempts.get(custom_id, 0) + 1
                attempts[custom_id] = attempt
                claimed.append(attempt)
            return claimed

    def attempts(self, custom_id: str) -> int:
        """How many batches have carried ``custom_id`` so far."""
        with self._lock:
            return self._attempts.get(custom_id, 0)

    def reset_attempts(self) -> None:
        """Forget every custom_id's attempt count (the next batch of each is attempt 1 again)."""
        with self._lock:
            self._attempts.clear()

    # -- batches -------------------------------------------------------------------------
    def create(self, entries: list[Entry]) -> Batch:
        """Store a new batch; processing starts now."""
        batch_id = self.ids.batch_id()
        batch = Batch(batch_id, entries, created=self.clock.now(), config=self.config)
        with self._lock:
            self._batches[batch_id] = batch
            bisect.insort(self._order, batch_id)
            heapq.heappush(self._due, (batch.end_time, batch_id))
            self.batches_created += 1
        return batch

    def get(self, batch_id: str) -> Batch:
        """The batch, or a 404 the API would give."""
        batch = self._batches.get(batch_id)
        if batch is None:
            shown = repr(batch_id) if len(batch_id) <= 80 else repr(batch_id[:77] + "...")
            raise EmulatorError(404, "not_found_error", f"message batch {shown} not found")
        return batch

    def page(self, limit: int, before_id: str | None, after_id: str | None) -> tuple[list[Batch], bool]:
        """One page of the list endpoint, newest first, and whether more lie beyond it."""
        with self._lock:
            order = self._order
            if before_id is not None:
                # Newer than before_id: the `limit` closest to it, shown newest first.
                newer = order[bisect.bisect_right(order, before_id) :]
                chosen, has_more = newer[:limit], len(newer) > limit
            else:
                end = bisect.bisect_left(order, after_id) if after_id is not None else len(order)
                start = max(0, end - limit)
                chosen, has_more = order[start:end], start > 0
            return [self._batches[i] for i in reversed(chosen)], has_more

    def cancel(self, batch_id: str) -> Batch:
        """Start canceling; safe to repeat while the batch is canceling."""
        now = self.clock.now()
        with self._lock:
            batch = self.get(batch_id)
            if batch.is_ended(now):
                raise EmulatorError(
                    400, "invalid_request_error", f"message batch {batch_id} has already ended and cannot be canceled"
                )
            if batch.cancel_at is None:
                batch.cancel_at = now
                batch._end = batch._compute_end()
                heapq.heappush(self._due, (batch.end_time, batch_id))
        return batch

    def delete(self, batch_id: str) -> None:
        """Forget an ended batch and its results."""
        now = self.clock.now()
        with self._lock:
            _require_ended(
                self.get(batch_id),
                now,
                "only ended batches can be deleted (cancel it and wait until it has ended)",
            )
            del self._batches[batch_id]
            self._order.pop(bisect.bisect_left(self._order, batch_id))

    # -- results -------------------------------------------------------------------------
    def results(self, batch_id: str) -> Future[bytearray]:
        """A future of the batch's rendered results, or the error the API gives instead."""
        now = self.clock.now()
        with self._lock:
            batch = _require_ended(self.get(batch_id), now, "results are available once it has ended")
            if now >= batch.archive_at:
                batch.results = None  # archived results are gone for good: free the memory
                batch.render_future = None
                raise EmulatorError(
                    404,
                    "not_found_error",
                    f"results of message batch {batch_id} were archived at {rfc3339(batch.archive_at)} "
                    "(29 days after creation) and can no longer be downloaded",
                )
            return self._start_render(batch)

    def served(self, batch_id: str) -> tuple[bytearray, str]:
        """The rendered results of an ended batch and their etag (after :meth:`results` is done)."""
        with self._lock:
            batch = self.get(batch_id)
            data = batch.results or bytearray()
            return data, f'"{batch.id}-{batch.generation}-{len(data)}"'

    def alter_results(self, batch_id: str, *, reshuffle: bool = False, duplicate_line: int | None = None) -> str:
        """Serve different bytes for a rendered batch from now on; returns the new etag.

        ``reshuffle`` puts the lines in another order (same lines, same length, new bytes);
        ``duplicate_line`` serves line N (0-based) twice in a row. A new buffer replaces the
        old one, so downloads under way keep streaming the bytes they started with.
        """
        with self._lock:
            batch = self.get(batch_id)
            lines = bytes(batch.results or b"").splitlines(keepends=True)
            if duplicate_line is not None:
                if duplicate_line >= len(lines):
                    raise EmulatorError(
                        400,
                        "invalid_request_error",
                        f"duplicate_line {duplicate_line} is past the last line of {len(lines)} results",
                    )
                lines.insert(duplicate_line + 1, lines[duplicate_line])
            batch.generation += 1
            if reshuffle:
                before = list(lines)
                rng = random.Random(f"{self.config.seed}:{batch_id}:{batch.generation}")
                while lines == before and len(set(lines)) > 1:
                    rng.shuffle(lines)
            batch.results = bytearray().join(lines)
            return f'"{batch.id}-{batch.generation}-{len(batch.results)}"'

    def _start_render(self, batch: Batch) -> Future[bytearray]:
        if batch.render_future is None:
            batch.render_future = self._executor.submit(batch.render)
        return batch.render_future

    def render_due(self) -> int:
        """Start rendering every batch that has ended since the last call; returns how many."""
        now = self.clock.now()
        started = 0
        with self._lock:
            while self._due and self._due[0][0] <= now:
                _, batch_id = heapq.heappop(self._due)
                batch = self._batches.get(batch_id)
                if batch is not None and batch.is_ended(now) and batch.render_future is None:
                    self._start_render(batch)
                    started += 1
        return started

    # -- admin -----------------------------------------------------------------------------
    def record_call(self, endpoint: str) -> None:
        """Count one API call (under the lock: stats may be read from another thread meanwhile)."""
        with self._lock:
            self.calls[endpoint] += 1
            self.arrivals.append((endpoint, time.monotonic()))

    def record_rejected(self, endpoint: str) -> None:
        """Count one call refused before it reached its endpoint (bad or missing key or version)."""
        with self._lock:
            self.rejected[endpoint] += 1

    def call_times(self, endpoint: str) -> list[float]:
        """``time.monotonic()`` at which the latest calls of ``endpoint`` arrived, oldest first."""
        with self._lock:
            return [t for name, t in self.arrivals if name == endpoint]

    def stats(self) -> dict[str, Any]:
        """Calls per endpoint and batches created since the start (or the last reset)."""
        with self._lock:
            return {
                "calls": dict(self.calls),
                "rejected": dict(self.rejected),
                "batches_created": self.batches_created,
                "batches": len(self._batches),
            }

    def reset(self) -> None:
        """Forget every batch and statistic."""
        with self._lock:
            self._batches.clear()
            self._order.clear()
            self._due.clear()
            self.calls.clear()
            self.arrivals.clear()
            self.rejected.clear()
            self.batches_created = 0
            self._attempts.clear()

    def close(self) -> None:
        """Stop the render worker (pending renders are dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _require_ended(batch: Batch, now: float, rule: str) -> Batch:
    """The batch if it has ended, else the API's 400 naming its status and ``rule``."""
    if not batch.is_ended(now):
        raise EmulatorError(400, "invalid_request_error", f"message batch {batch.id} is {batch.status(now)}; {rule}")
    return batch

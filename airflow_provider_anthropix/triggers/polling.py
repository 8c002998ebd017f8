"""The poll loop both triggers run: wait, poll, back off after failures, log progress, stop at the deadline.

:class:`PollingTrigger` owns the loop and the options every trigger of this provider takes;
a subclass says what one poll asks and what its event carries
(:class:`~airflow_provider_anthropix.triggers.batch.BatchEndedTrigger` for one batch,
:class:`~airflow_provider_anthropix.triggers.job.BatchesEndedTrigger` for a job's batches).
The loop never blocks the triggerer's event loop: async HTTP on the connection's shared
client, ``asyncio.sleep`` between polls, jitter so triggers started together spread out.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow_provider_anthropix.api.async_client import AsyncClient
    from airflow_provider_anthropix.api.errors import AnthropixError

#: Longest wait between polls after failures (seconds).
MAX_BACKOFF = 600.0


def jittered(interval: float, jitter: float, rng: random.Random | None = None) -> float:
    """``interval`` moved by up to ``jitter`` (a fraction) either way, never below 0."""
    spread = interval * max(0.0, min(jitter, 1.0))
    draw = (rng or random).uniform(-spread, spread)
    return max(0.0, interval + draw)


def deadline_epoch(deadline: str | None) -> float | None:
    """A trigger's ISO 8601 deadline as a Unix time, or None for no deadline."""
    if not deadline:
        return None
    import pendulum  # only when a deadline is set: DAG files import this module

    parsed = pendulum.parse(deadline)
    if not isinstance(parsed, pendulum.DateTime):
        raise ValueError(f"deadline must be an ISO 8601 date-time, got {deadline!r}")
    return float(parsed.timestamp())


def next_poll_wait(poll_interval: float, jitter: float, failures: int, retry_hint: float | None) -> float:
    """Seconds until the next poll: the interval when all is well; the server's hint or a backoff after failures."""
    if failures == 0:
        return jittered(poll_interval, jitter)
    if retry_hint is not None and retry_hint >= 0:
        return min(retry_hint, MAX_BACKOFF)  # a proxy's "retry-after: 86400" must not outlast the deadline
    backoff = min(MAX_BACKOFF, poll_interval * 2.0 ** (failures - 1))
    return jittered(backoff, max(jitter, 0.25))


async def sleep_before_first_poll(first_poll_delay: float, jitter: float, deadline: float | None) -> None:
    """Wait ``first_poll_delay`` (jittered), never past the deadline."""
    if first_poll_delay <= 0:
        return
    wait = jittered(first_poll_delay, jitter)
    if deadline is not None:
        wait = min(wait, max(0.0, deadline - time.time()))
    await asyncio.sleep(wait)


def duration(seconds: float) -> str:
    """``45 s``, ``14 min``, ``2.5 h``: an ETA as a person reads it."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class PollingOptions(TypedDict, total=False):
    """How a trigger here polls, besides its connection and what it waits for (see :class:`PollingTrigger`)."""

    poll_interval: float
    deadline: str | None
    jitter: float
    max_poll_failures: int
    progress_log_interval: float
    first_poll_delay: float


@dataclass(frozen=True)
class Poll:
    """What one round of polling found.

    :param end: ``(status, message)`` of the event that ends the wait (the batches ended, or an
        error a new poll cannot fix); None to keep waiting.
    :param failure: the round failed transiently (it counts towards ``max_poll_failures``).
    :param failed: what failed, for the log line (``batch msgbatch_x``, ``3 batch(es)``).
    :param retry_hint: seconds the server asked to wait (``retry-after``), if it did.
    """

    end: tuple[str, str] | None = None
    failure: AnthropixError | None = None
    failed: str = ""
    retry_hint: float | None = None


def retry_hint_of(exc: AnthropixError) -> float | None:
    """The server's ``retry-after`` on an API error, if any."""
    from airflow_provider_anthropix.api.errors import AnthropixAPIError

    return exc.retry_after if isinstance(exc, AnthropixAPIError) else None


def refused(what: str, exc: AnthropixError) -> Poll | None:
    """The round's end when polling ``what`` failed in a way a new poll cannot fix (401, 404...), else None."""
    from airflow_provider_anthropix.api.retry import is_transient

    return None if is_transient(exc) else Poll(end=("error", f"polling {what} failed: {exc}"))


class PollingTrigger(BaseTrigger):
    """Polls until :meth:`_poll` ends the wait, the deadline passes, or polls fail too often; yields one event.

    Events are ``{"status": "success" | "error" | "timeout", "message": str, ...}``; a subclass
    adds what it saw (:meth:`_event`).

    :param anthropix_conn_id: the Airflow connection (read asynchronously; its key never leaves it).
    :param poll_interval: seconds between polls, jittered by ``jitter``.
    :param deadline: ISO 8601 time after which a ``timeout`` event is sent; None waits until the end.
    :param jitter: fraction of ``poll_interval`` each wait may move either way (0.1 = +/-10%).
    :param max_poll_failures: consecutive failed rounds tolerated before an ``error`` event; waits back
        off exponentially in between and follow ``retry-after``.
    :param progress_log_interval: seconds between progress log lines.
    :param first_poll_delay: seconds (jittered) to wait before the first poll: the task that deferred
        has just looked, so polling again at once gains nothing; it also keeps the trigger from
        firing within moments of the deferral, a window in which Airflow's scheduler can still be
        processing the deferring try.
    """

    def __init__(
        self,
        *,
        anthropix_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        deadline: str | None = None,
        jitter: float = 0.1,
        max_poll_failures: int = 10,
        progress_log_interval: float = 300.0,
        first_poll_delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.anthropix_conn_id = anthropix_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.jitter = float(jitter)
        self.max_poll_failures = int(max_poll_failures)
        self.progress_log_interval = float(progress_log_interval)
        self.first_poll_delay = float(first_poll_delay)

    def _classpath(self) -> str:
        return f"{type(self).__module__}.{type(self).__qualname__}"

    def _polling_options(self) -> dict[str, Any]:
        """The connection and :class:`PollingOptions`, for ``serialize()`` (plain JSON values only)."""
        return {
            "anthropix_conn_id": self.anthropix_conn_id,
            "poll_interval": self.poll_interval,
            "deadline": self.deadline,
            "jitter": self.jitter,
            "max_poll_failures": self.max_poll_failures,
            "progress_log_interval": self.progress_log_interval,
            "first_poll_delay": self.first_poll_delay,
        }

    # -- what a subclass says ----------------------------------------------------------------

    @abstractmethod
    def _subject(self) -> str:
        """What is waited for, for messages: ``batch msgbatch_x``."""

    @abstractmethod
    def _begin(self) -> None:
        """Forget what earlier runs saw (a trigger object may be run again in tests)."""

    @abstractmethod
    async def _poll(self, client: AsyncClient) -> Poll:
        """One round of polling; remembers what it saw for :meth:`_event` and :meth:`_describe`."""

    @abstractmethod
    def _event(self, status: str, message: str) -> TriggerEvent:
        """The one event, with what the polls saw."""

    @abstractmethod
    def _done(self) -> int:
        """Requests done so far in what the polls saw (for the rate behind the ETA)."""

    @abstractmethod
    def _describe(self, rate: float | None) -> str:
        """The progress line; ``rate`` is requests done per second since the first poll (None: unknown yet)."""

    @abstractmethod
    def _timeout_message(self) -> str:
        """The message of the ``timeout`` event."""

    def _phase(self) -> str:
        """A progress line is also logged whenever this changes (e.g. the batch's processing_status)."""
        return ""

    def _count_poll_failure(self) -> None:
        """``anthropix.poll.failures``: a UDP datagram at most, nothing that blocks the loop."""
        from airflow_provider_anthropix import metrics

        metrics.incr(
            "anthropix.poll.failures", tags={"conn_id": self.anthropix_conn_id, "trigger": type(self).__name__}
        )

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_anthropix.hooks.anthropix import AnthropixHook

        self._begin()
        try:
            deadline = deadline_epoch(self.deadline)
            client = await AnthropixHook.aget_async_client(self.anthropix_conn_id)
        except Exception as exc:  # settings errors, missing connection: retrying cannot fix them
            yield self._event("error", f"cannot wait for {self._subject()}: {exc}")
            return
        await sleep_before_first_poll(self.first_poll_delay, self.jitter, deadline)

        failures = 0
        first_seen: tuple[float, int] | None = None  # (time, done) of the first good round, for the ETA
        last_log = 0.0
        last_phase = ""
        while True:
            found = await self._poll(client)
            if found.end is not None:
                yield self._event(*found.end)
                return
            if found.failure is not None:
                failures += 1
                self._count_poll_failure()
                if failures > self.max_poll_failures:
                    yield self._event(
                        "error",
                        f"polling {self._subject()} failed {failures} times in a row; last error: {found.failure}",
                    )
                    return
                self.log.warning(
                    "Polling %s failed (%s); failure %d of %d tolerated",
                    found.failed,
                    found.failure,
                    failures,
                    self.max_poll_failures,
                )
            else:
                failures = 0
                now = time.monotonic()
                done = self._done()
                if first_seen is None:
                    first_seen = (now, done)
                if self._phase() != last_phase or now - last_log >= self.progress_log_interval:
                    elapsed = now - first_seen[0]
                    self.log.info("%s", self._describe((done - first_seen[1]) / elapsed if elapsed > 0 else None))
                    last_phase = self._phase()
                    last_log = now

            wait = next_poll_wait(self.poll_interval, self.jitter, failures, found.retry_hint)
            if deadline is not None:
                remaining = deadline - time.time()
                if remaining <= 0:
                    yield self._event("timeout", self._timeout_message())
                    return
                wait = min(wait, remaining)
            await asyncio.sleep(wait)

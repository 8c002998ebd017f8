"""The retry policy both clients share: what is retried, and how long to wait.

Rules, in order:

1. The server's ``x-should-retry: true|false`` header decides when present.
2. Retryable statuses: 408, 409, 429, and every 5xx (529 and a CDN's 520-524 included).
3. Connection failures and timeouts are retried, except for a **create** that may have
   reached the server. A create is not idempotent: if the request left before the
   connection broke, the batch may exist (and be billed) although we never saw the
   answer, and sending it again could create a second batch. Only when we know nothing
   was sent (connect refused, DNS failure) or the server answered with a status that says
   "not done, try again" (429, 529, or ``x-should-retry: true``) is a create resent.
   Anything else surfaces to the caller, whose recovery looks for the batch first.
4. Delays: the server's ``retry-after-ms`` or ``retry-after`` (seconds, or an HTTP date)
   when it is between 0 and 60 s; otherwise exponential backoff with full jitter
   (random between 0 and ``min(max_delay, initial_delay * 2**attempt)``).
5. A cap on the total time spent waiting: once the next wait would pass it, we stop.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import pendulum

from airflow_provider_anthropix.api.errors import AnthropixAPIError, AnthropixConnectionError, AnthropixError

log = logging.getLogger(__name__)

#: Retryable below 500; every 5xx is retryable too (529 and the edge's 52x included), see :func:`is_retryable_status`.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
#: Statuses after which even a create may be resent: the server says it did not act on it.
CREATE_SAFE_STATUSES = frozenset({429, 529})
#: Server hints above this are ignored in favour of our own backoff (matches the official SDK).
MAX_HONOURED_HINT = 60.0


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, from ``retry-after-ms`` or ``retry-after``; None if absent or invalid."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = now if now is not None else pendulum.now("UTC").timestamp()
    return max(0.0, when.timestamp() - current)


def is_retryable_status(status: int) -> bool:
    """408, 409, 429 and every 5xx (500, 529, a CDN's 520-524, ...): the request was fine, the path was not."""
    return status >= 500 or status in RETRYABLE_STATUSES


def is_transient(error: AnthropixError) -> bool:
    """Whether a call that failed this way may succeed later, leaving aside create's special rule.

    What a poller (the trigger, a poking sensor) asks between polls: the same verdict the
    retry policy gives an idempotent call.
    """
    if isinstance(error, AnthropixAPIError):
        hint = should_retry_header(error.headers)
        return hint if hint is not None else is_retryable_status(error.status)
    return isinstance(error, AnthropixConnectionError)


def should_retry_header(headers: Mapping[str, str]) -> bool | None:
    """The server's explicit verdict from ``x-should-retry``, or None when it gave none."""
    value = (headers.get("x-should-retry") or "").strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None


#: Retries after a call's first attempt, as the official SDK does.
DEFAULT_MAX_RETRIES = 2
#: Seconds of waiting across one call's retries before it gives up.
DEFAULT_MAX_TOTAL_RETRY_WAIT = 60.0


@dataclass
class RetryPolicy:
    """How many times and how long to retry one logical call.

    :param max_retries: retries after the first attempt (the SDK's default is 2).
    :param initial_delay: first backoff step in seconds.
    :param max_delay: largest single backoff step.
    :param max_total_wait: total seconds of waiting across retries before giving up.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_total_wait: float = DEFAULT_MAX_TOTAL_RETRY_WAIT
    rng: Callable[[], float] = field(default=random.random, repr=False)

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for retry number ``attempt`` (0-based)."""
        ceiling: float = min(self.max_delay, self.initial_delay * 2.0**attempt)
        return ceiling * self.rng()

    def is_retryable(self, error: AnthropixError, *, idempotent: bool) -> bool:
        """Whether this failure of a call may be retried at all (ignores the attempt count)."""
        if isinstance(error, AnthropixAPIError):
            hint = should_retry_header(error.headers)
            if hint is not None:
                return hint
            if idempotent:
                return is_retryable_status(error.status)
            return error.status in CREATE_SAFE_STATUSES
        if isinstance(error, AnthropixConnectionError):
            return idempotent or not error.maybe_sent
        return False

    def next_delay(
        self,
        error: AnthropixError,
        *,
        attempt: int,
        waited: float,
        idempotent: bool,
    ) -> float | None:
        """Seconds to wait before retry ``attempt`` (0-based), or None to give up and raise ``error``."""
        if attempt >= self.max_retries or not self.is_retryable(error, idempotent=idempotent):
            return None
        delay = self.backoff(attempt)
        hinted = error.retry_after if isinstance(error, AnthropixAPIError) else None
        if hinted is not None and 0 <= hinted <= MAX_HONOURED_HINT:
            delay = float(hinted)
        if waited + delay > self.max_total_wait:
            return None
        return delay


class RetryLoop:
    """The bookkeeping of one logical call's retries, shared by both clients' send loops.

    A client tries, and on an :class:`AnthropixError` asks :meth:`next_delay` how long to
    sleep (with its own sleep, blocking or not) before the next try; the policy's verdict,
    the warning line and the count of attempts and seconds waited are kept here.
    """

    def __init__(self, policy: RetryPolicy, call_name: str, *, idempotent: bool) -> None:
        self.policy = policy
        self.call_name = call_name
        self.idempotent = idempotent
        self.attempt = 0
        self.waited = 0.0

    def next_delay(self, error: AnthropixError) -> float:
        """Seconds to wait before trying again, logged; re-raises ``error`` when the policy gives up."""
        delay = self.policy.next_delay(error, attempt=self.attempt, waited=self.waited, idempotent=self.idempotent)
        if delay is None:
            raise error
        log.warning(
            "%s failed (%s); retry %d of %d in %.1f s",
            self.call_name,
            error,
            self.attempt + 1,
            self.policy.max_retries,
            delay,
        )
        self.waited += delay
        self.attempt += 1
        return delay

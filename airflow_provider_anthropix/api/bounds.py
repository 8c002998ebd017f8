"""One deadline for a check made of many calls, which a slow server cannot stretch.

The checks made before a create (the model check walks ``GET /v1/models``, the estimate
counts a sample of requests' tokens) are many calls, each with its own retries and read
timeout. A read timeout bounds one wait for a byte, not an answer: a server that sends a
byte every half second keeps a call alive for ever, and one that pages for ever keeps the
walk going. A :func:`bounded` block sets one monotonic deadline for every call made inside
it, by either client; the clients consult it through :func:`current`:

- before each attempt, and before each retry's sleep (a sleep that would end past the
  deadline is not taken);
- as the connect and read timeouts of an attempt (never longer than what is left);
- over a whole attempt, headers and body: the async client wraps the attempt in
  ``asyncio.timeout``; the sync client arms a :class:`Watchdog` that shuts down the
  attempt's socket when the deadline passes, which ends a blocked read at once.

The deadline lives in a :class:`~contextvars.ContextVar`, so it follows the code that set it:
one task's check in a worker thread, or one coroutine on a shared event loop, and never
another trigger's calls on the same shared client.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_anthropix.api.errors import AnthropixError, CheckDeadlineError

#: Pages a walk through the model list may take (at 1,000 models a page: far more than exist).
MAX_MODEL_PAGES = 20


@dataclass(frozen=True)
class Bound:
    """The deadline of one check, and the words its error uses.

    :param what: the check, for the message (``"the model check (GET /v1/models)"``).
    :param seconds: how long the whole check may take.
    :param skip: how a user skips the check (``"pass check_models=False"``), for the message.
    :param ends_at: the deadline on ``clock``.
    :param clock: a monotonic clock (``time.monotonic``).
    """

    what: str
    seconds: float
    skip: str
    ends_at: float
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def remaining(self) -> float:
        """Seconds left, 0 once the deadline has passed."""
        return max(0.0, self.ends_at - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.ends_at

    def error(self, call_name: str, last: BaseException | None = None) -> CheckDeadlineError:
        """The failure: what did not finish in time, the call it was at, the last error seen and how to skip it."""
        text = f"{self.what} did not finish within {self.seconds:g} s (it was at a {call_name} call"
        if last is not None:
            text += f"; the last error was: {last}"
        text += "); nothing was sent. The server answers too slowly, or without end"
        if self.skip:
            text += f". To go on without this check, {self.skip}"
        return CheckDeadlineError(text)

    def check(self, call_name: str, last: BaseException | None = None) -> None:
        """Raise :meth:`error` once the deadline has passed."""
        if self.expired():
            raise self.error(call_name, last)

    def timeout(self, configured: float) -> float:
        """A connect or read timeout no longer than what is left (and never zero, which would mean 'no wait')."""
        return max(0.001, min(configured, self.remaining()))


_current: contextvars.ContextVar[Bound | None] = contextvars.ContextVar("anthropix_bound", default=None)


def current() -> Bound | None:
    """The deadline of the check the caller is in, if any."""
    return _current.get()


@contextlib.contextmanager
def bounded(
    what: str, seconds: float, *, skip: str = "", clock: Callable[[], float] = time.monotonic
) -> Iterator[Bound]:
    """Every API call made inside the block (by either client, in this context) ends by ``seconds`` from now.

    A block inside another keeps the earlier of the two deadlines (and its own words).
    """
    if not seconds > 0:
        raise ValueError(f"a check's deadline must be a positive number of seconds, got {seconds!r}")
    ends_at = clock() + seconds
    outer = _current.get()
    if outer is not None:
        ends_at = min(ends_at, outer.ends_at)
    token = _current.set(Bound(what, seconds, skip, ends_at, clock))
    try:
        yield _current.get()  # type: ignore[misc]
    finally:
        _current.reset(token)


def sleep_allowed(bound: Bound | None, delay: float, call_name: str, last: AnthropixError) -> None:
    """Raise the deadline's error instead of sleeping ``delay`` s past it (the retry would start too late)."""
    if bound is not None and delay >= bound.remaining():
        raise bound.error(call_name, last) from None


class Watchdog:
    """Shuts down the sockets of one blocking attempt when its deadline passes.

    A blocked ``recv`` cannot be interrupted from its own thread; shutting the socket down
    from a timer thread makes it return at once, and the client then reports the deadline
    instead of the broken connection. Connections are registered as the pool hands them out
    (see :func:`watched`), before they connect, so a server that drips its status line and
    headers is cut off as surely as one that drips its body.
    """

    def __init__(self, bound: Bound) -> None:
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self.fired = False
        self._timer = threading.Timer(bound.remaining(), self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def add(self, connection: Any) -> None:
        """Watch an HTTP connection (urllib3's): its ``sock`` is read when the deadline passes."""
        with self._lock:
            self._connections.append(connection)
            fired = self.fired
        if fired:
            _shut(connection)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_watchdog: contextvars.ContextVar[Watchdog | None] = contextvars.ContextVar("anthropix_watchdog", default=None)


@contextlib.contextmanager
def watched(bound: Bound | None) -> Iterator[Watchdog | None]:
    """Arm a :class:`Watchdog` for one blocking attempt under ``bound`` (nothing without one)."""
    if bound is None:
        yield None
        return
    dog = Watchdog(bound)
    token = _watchdog.set(dog)
    dog.start()
    try:
        yield dog
    finally:
        dog.cancel()
        _watchdog.reset(token)


def watch_connection(connection: Any) -> None:
    """Called by the sync client's connection pools for each connection they hand out."""
    dog = _watchdog.get()
    if dog is not None:
        dog.add(connection)

"""Overlap the three stages of an export: network reads, summarising, storing.

Reading a socket, hashing (sha256), compressing (zlib) and writing files all release the
GIL for large buffers; decoding and counting lines does not. Running the reads and the
writes in two helper threads, with the summary in the caller's thread, lets them proceed
side by side on a multi-core worker instead of one after the other. Queues are bounded
(a few MB), so memory stays flat: a slow store slows the download instead of buffering it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = 0, 1, 2
#: How long a blocked helper waits before checking whether it was told to stop.
_POLL_SECONDS = 0.1
_JOIN_SECONDS = 5.0


class Prefetcher(Generic[T]):
    """Iterates ``source`` in a thread, at most ``depth`` items ahead of the consumer.

    Errors of the source are raised in the consumer, at the position where they happened.
    :meth:`close` (also on leaving the ``with`` block) stops the thread and closes the
    source (e.g. releases an HTTP response).
    """

    def __init__(self, source: Iterable[T], *, depth: int = 2, name: str = "anthropix-reader") -> None:
        self._source = source
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def _run(self) -> None:
        iterator = iter(self._source)
        try:
            for item in iterator:
                if not self._put((_ITEM, item)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put((_ERROR, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                # The consumer is already handling the outcome; a failing close adds nothing.
                with contextlib.suppress(Exception):
                    close()

    def _put(self, entry: tuple[int, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            kind, value = self._queue.get()
            if kind == _ITEM:
                yield value
            elif kind == _END:
                return
            else:
                raise value

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a put waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._started:
            self._thread.join(_JOIN_SECONDS)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OrderedWorker:
    """Runs submitted calls one after another, in submission order, in a thread.

    A failed call stops the worker; its error is raised by the next :meth:`submit` or by
    :meth:`finish`, so the caller never carries on past a failed write.
    """

    def __init__(self, *, depth: int = 2, name: str = "anthropix-writer") -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            if task is None or self._stop.is_set():
                return
            function, args = task
            try:
                function(*args)
            except BaseException as exc:  # raised in the submitting thread
                self._error = exc
                self._stop.set()
                return

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        while True:
            self._raise_if_failed()
            try:
                self._queue.put((function, args), timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until every submitted call has run; raise the first error, if any."""
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=_POLL_SECONDS)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise_if_failed()

    def cancel(self) -> None:
        """Drop what is queued and stop (used when the export is abandoned)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(_JOIN_SECONDS)

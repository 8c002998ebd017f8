"""The read/summarise/write overlap: order kept, errors surface in the caller, threads stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from airflow_provider_anthropix.io.pipeline import OrderedWorker, Prefetcher


def test_prefetcher_keeps_order_and_raises_the_source_error_in_place() -> None:
    def source() -> Iterator[int]:
        yield from range(5)
        raise ConnectionResetError("cut")

    seen: list[int] = []

    def consume() -> None:
        with Prefetcher(source(), depth=2) as items:
            for item in items:
                seen.append(item)

    with pytest.raises(ConnectionResetError, match="cut"):
        consume()
    assert seen == [0, 1, 2, 3, 4]


def test_prefetcher_close_stops_the_reader_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            closed.set()

    prefetcher = Prefetcher(endless(), depth=2)
    for item in prefetcher:
        if item == 3:
            break
    prefetcher.close()
    assert closed.wait(5)


def test_ordered_worker_runs_in_order_and_reports_the_first_failure() -> None:
    done: list[int] = []
    worker = OrderedWorker(depth=2)
    for i in range(50):
        worker.submit(done.append, i)
    worker.finish()
    assert done == list(range(50))

    def fail(_: int) -> None:
        raise OSError("disk full")

    worker = OrderedWorker(depth=2)
    worker.submit(fail, 1)

    def keep_submitting() -> None:
        for i in range(100):
            worker.submit(done.append, i)
            time.sleep(0.001)
        worker.finish()

    with pytest.raises(OSError, match="disk full"):
        keep_submitting()


def test_ordered_worker_cancel_drops_queued_work() -> None:
    """Work queued behind a blocked write never runs once the worker is canceled."""
    started = threading.Event()
    gate = threading.Event()
    ran: list[int] = []
    worker = OrderedWorker(depth=4)

    def blocked_write() -> None:
        started.set()
        gate.wait(10)

    worker.submit(blocked_write)
    assert started.wait(5), "the worker never started the first write"
    for i in range(3):
        worker.submit(ran.append, i)  # queued behind the blocked write (depth 4: no wait)
    canceller = threading.Thread(target=worker.cancel)
    canceller.start()
    # cancel() has told the worker to stop (it drops the queue and joins); only now may the write end.
    assert worker._stop.wait(5)
    gate.set()
    canceller.join(10)
    assert not canceller.is_alive()
    assert not worker._thread.is_alive(), "the worker thread is still running after cancel()"
    assert ran == [], f"queued work ran after cancel(): {ran}"


def test_ordered_worker_finish_runs_queued_work() -> None:
    """The counterpart of the test above: without a cancel, the same queued work does run."""
    gate = threading.Event()
    ran: list[int] = []
    worker = OrderedWorker(depth=4)
    worker.submit(gate.wait, 10)
    for i in range(3):
        worker.submit(ran.append, i)
    gate.set()
    worker.finish()
    assert ran == [0, 1, 2]

"""Load under faults: 5,000 concurrent BatchEndedTriggers on one event loop, 5% of API calls failing.

What a busy triggerer lives through on a bad night. The emulator runs in its own process;
this process creates the batches, then runs every trigger on one asyncio loop (as the
triggerer does) until each has yielded its event, while a background task keeps arming
faults so that about 5% of the calls fail: HTTP 500, 529, 429 with retry-after, TCP resets
and dropped answers, mixed.

Three kinds of trigger, so "the right event" means something:

- ``success``: a batch that ends during the run (most triggers);
- ``timeout``: a batch that is still running at the trigger's deadline;
- ``error``: a batch id that does not exist (a 404 is not transient).

Checked and printed: every trigger's single event has the expected status and batch id;
asyncio tasks, open sockets and file descriptors before, at peak, after every trigger ended
and after the shared clients are closed (no growth: nothing leaked); achieved fault rate;
event-loop lag; peak RSS. Exit status 1 if any check fails.

    .venv/bin/python benchmarks/bench_load_faults.py [--triggers 5000] [--fault-rate 0.05] [--interval 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx
from emulator_process import start_emulator

KEY = "sk-ant-bench-load-faults"
FAULT_KINDS: list[dict[str, Any]] = [
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 529},
    {"kind": "status", "status": 429, "retry_after": 1},
    {"kind": "reset"},
    {"kind": "drop"},
]


def open_sockets() -> int:
    """Sockets held by this process (from /proc: no dependency, exact)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def where_waiting(agen: Any) -> str:
    """The chain of coroutines an async generator is suspended in (innermost last)."""
    parts = []
    frame = getattr(agen, "ag_frame", None)
    if frame is not None:
        parts.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
    awaited = getattr(agen, "ag_await", None)
    for _ in range(30):
        if awaited is None:
            break
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is not None:
            parts.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_code.co_name}:{frame.f_lineno}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return " -> ".join(parts) or "unknown"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def start_pinned_emulator(processing_seconds: float) -> tuple[subprocess.Popen[str], str]:
    """The emulator on CPU 1, this process on CPU 0 (when there are two)."""
    proc, url = start_emulator(KEY, "--admin", "--processing-seconds", str(processing_seconds), cpu=1)
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {0})
    return proc, url


async def arm_faults(url: str, rate: float, stop: asyncio.Event) -> None:
    """Keep ``rate`` of the retrieve calls failing, spread out like independent failures.

    An armed fault hits the next matching call, so arming many at once would hit a burst of
    consecutive calls (mostly one trigger's own retries). Instead at most one fault is armed
    at a time, and only while the share of failed calls is below ``rate``.
    """
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": KEY}, timeout=10) as admin:
        turn = 0
        while not stop.is_set():
            stats = (await admin.get("/_emulator/stats")).json()
            calls, fired, armed = stats["calls"].get("retrieve", 0), stats["faults_fired"], len(stats["faults"])
            if not armed and fired < rate * calls:
                fault = {**FAULT_KINDS[turn % len(FAULT_KINDS)], "endpoint": "retrieve", "count": 1}
                await admin.post("/_emulator/faults", json=fault)
                turn += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.01)
        await admin.delete("/_emulator/faults")


async def ticker(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.05)
        lags.append(max(0.0, loop.time() - start - 0.05))


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    import logging

    import pendulum

    from airflow_provider_anthropix.api import ClientConfig, SyncClient
    from airflow_provider_anthropix.api.async_client import _shared
    from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger

    failed_polls = Counter[str]()

    class CountingTrigger(BatchEndedTrigger):
        """Counts polls that failed even after the client's own retries (the trigger's tolerance at work)."""

        def _next_wait(self, failures: int, retry_hint: float | None) -> float:
            if failures:
                failed_polls["tolerated"] += 1
            return super()._next_wait(failures, retry_hint)

    logging.getLogger("airflow_provider_anthropix").setLevel(logging.ERROR)
    n = args.triggers
    n_error = n_timeout = int(n * 0.1)
    n_success = n - n_error - n_timeout
    body = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    t0 = time.monotonic()
    with SyncClient(ClientConfig(api_key=KEY, base_url=url)) as client:
        ids = [client.create_batch([{"custom_id": "a", "params": body}]).id for _ in range(n_success + n_timeout)]
    created_in = time.monotonic() - t0
    # The timeout triggers' deadline comes before their batches end; the success ones have none.
    deadline = pendulum.now("UTC").add(seconds=args.processing * 0.5).to_iso8601_string()
    plan: list[tuple[str, str]] = [("success", b) for b in ids[:n_success]]
    plan += [("timeout", b) for b in ids[n_success:]]
    plan += [("error", f"msgbatch_missing_{i:05d}") for i in range(n_error)]

    gc.collect()
    before = {"tasks": len(asyncio.all_tasks()), "sockets": open_sockets(), "fds": open_fds()}
    lags: list[float] = []
    stop = asyncio.Event()
    background = [
        asyncio.create_task(ticker(stop, lags)),
        asyncio.create_task(arm_faults(url, args.fault_rate, stop)),
    ]
    events: dict[int, list[dict[str, Any]]] = {}
    peak = {"tasks": 0, "sockets": 0, "fds": 0}

    generators: dict[int, Any] = {}

    async def drive(index: int, trigger: BatchEndedTrigger) -> None:
        got = events.setdefault(index, [])
        generators[index] = agen = trigger.run()
        async for event in agen:
            got.append(dict(event.payload))

    started = time.monotonic()
    tasks = []
    for i, (kind, batch_id) in enumerate(plan):
        trigger = CountingTrigger(
            batch_id=batch_id,
            poll_interval=args.interval,
            deadline=deadline if kind == "timeout" else None,
            max_poll_failures=10,
            progress_log_interval=3600,
        )
        tasks.append(asyncio.create_task(drive(i, trigger)))
    pending = set(tasks)
    while pending:
        _done, pending = await asyncio.wait(pending, timeout=1.0)
        peak = {
            "tasks": max(peak["tasks"], len(asyncio.all_tasks())),
            "sockets": max(peak["sockets"], open_sockets()),
            "fds": max(peak["fds"], open_fds()),
        }
        if time.monotonic() - started > args.processing * 4 + args.patience:
            break
    elapsed = time.monotonic() - started
    stuck = []
    for task in pending:  # triggers that never yielded: say where they wait, then stop them
        index = tasks.index(task)
        stuck.append(f"trigger {index}: " + where_waiting(generators.get(index)))
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stop.set()
    await asyncio.gather(*background)
    gc.collect()
    after_events = {"tasks": len(asyncio.all_tasks()), "sockets": open_sockets(), "fds": open_fds()}
    for shared in list(_shared.get(asyncio.get_running_loop(), {}).values()):
        await shared.aclose()
    await asyncio.sleep(0.2)
    gc.collect()
    after_close = {"tasks": len(asyncio.all_tasks()), "sockets": open_sockets(), "fds": open_fds()}

    wrong: list[str] = []
    outcomes: Counter[str] = Counter()
    for i, (kind, batch_id) in enumerate(plan):
        got = events.get(i, [])
        if len(got) != 1:
            wrong.append(f"trigger {i} ({kind}) yielded {len(got)} events")
            continue
        event = got[0]
        outcomes[event["status"]] += 1
        if event["status"] != kind or (event.get("batch") or {}).get("id") != batch_id:
            wrong.append(
                f"trigger {i}: expected {kind} for {batch_id}, got {event['status']}: {event['message'][:120]}"
            )
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": KEY}) as admin:
        stats = (await admin.get("/_emulator/stats")).json()
    lags.sort()
    return {
        "triggers": n,
        "expected": {"success": n_success, "timeout": n_timeout, "error": n_error},
        "events": dict(outcomes),
        "wrong_events": len(wrong),
        "wrong_examples": wrong[:5],
        "stuck_where": stuck[:5],
        "seconds": round(elapsed, 1),
        "batches_created_in_s": round(created_in, 1),
        "retrieve_calls": stats["calls"]["retrieve"],
        "faults_fired": stats["faults_fired"],
        "fault_rate": round(stats["faults_fired"] / max(1, stats["calls"]["retrieve"]), 4),
        "polls_failed_after_client_retries": failed_polls["tolerated"],
        "loop_lag_ms": {
            "p50": round(1000 * lags[len(lags) // 2], 1) if lags else None,
            "p99": round(1000 * lags[math.ceil(len(lags) * 0.99) - 1], 1) if lags else None,
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "resources": {"before": before, "peak": peak, "after_events": after_events, "after_close": after_close},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triggers", type=int, default=5000)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--interval", type=float, default=15.0, help="poll interval of every trigger (s)")
    parser.add_argument("--processing", type=float, default=45.0, help="seconds each batch takes to end")
    parser.add_argument("--patience", type=float, default=120.0, help="extra seconds before a trigger counts as stuck")
    args = parser.parse_args()
    proc, url = start_pinned_emulator(args.processing)
    os.environ["AIRFLOW_CONN_ANTHROPIX_DEFAULT"] = json.dumps({"conn_type": "anthropix", "password": KEY, "host": url})
    try:
        result = asyncio.run(run(args, url))
    finally:
        proc.terminate()
        proc.wait(10)
    print(json.dumps(result, indent=2))
    res = result["resources"]
    checks = {
        "every trigger yielded exactly the expected event": result["wrong_events"] == 0,
        "no asyncio task left after the events": res["after_events"]["tasks"] <= res["before"]["tasks"],
        "sockets back to the baseline once the shared client is closed": res["after_close"]["sockets"]
        <= res["before"]["sockets"],
        "file descriptors back to the baseline": res["after_close"]["fds"] <= res["before"]["fds"],
        f"fault rate near {args.fault_rate:.0%}": abs(result["fault_rate"] - args.fault_rate) <= args.fault_rate * 0.3,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Trigger fan-in: N batch triggers on one event loop, ours vs the official provider's, side by side.

What a triggerer does all day: keep thousands of deferred waits polling. Each side runs in
its own subprocess (so its peak RSS is its own) with N triggers on one asyncio loop,
polling batches that do not end during the run, for ``--duration`` seconds:

- ours: ``BatchEndedTrigger`` (shared httpx client per connection and loop, jittered interval);
- official: ``airflow.providers.anthropic.triggers.batch.AnthropicBatchTrigger`` (an SDK client
  per trigger, each poll in ``asyncio.to_thread``), pointed at the same emulator.

Reported per side: polls/s achieved (retrieve calls counted by the emulator) vs nominal
(N / interval), event-loop lag p50/p99 (a 50 ms ticker's overshoot), peak RSS of the process.
The emulator runs in its own process, pinned to its own core when there are two.

    .venv/bin/python benchmarks/bench_trigger_fanin.py [--duration 60] [--scenario 1000:5 --scenario 5000:30]
    .venv/bin/python benchmarks/bench_trigger_fanin.py --sides ours --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import httpx
from emulator_process import pin_to_cpu, start_emulator

KEY = "sk-ant-bench-fanin"
TICK = 0.05


# -- child: run N triggers of one side --------------------------------------------------------


async def _ticker(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(TICK)
        lags.append(max(0.0, loop.time() - start - TICK))


def _make_trigger(side: str, batch_id: str, interval: float, end_time: float) -> Any:
    if side == "ours":
        from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger

        return BatchEndedTrigger(batch_id=batch_id, poll_interval=interval, progress_log_interval=3600)
    from airflow.providers.anthropic.triggers.batch import AnthropicBatchTrigger

    return AnthropicBatchTrigger(
        conn_id="anthropic_default", batch_id=batch_id, poll_interval=interval, end_time=end_time
    )


async def _drive(trigger: Any, events: list[Any]) -> None:
    async for event in trigger.run():
        events.append(event.payload)
        return


async def child_main(side: str, ids: list[str], n: int, interval: float, duration: float) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)  # a triggerer's log handler is not what is measured here
    end_time = time.time() + duration + 3600
    triggers = [_make_trigger(side, ids[i % len(ids)], interval, end_time) for i in range(n)]
    lags: list[float] = []
    events: list[Any] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(stop, lags))
    started = time.monotonic()
    tasks = [asyncio.create_task(_drive(t, events)) for t in triggers]
    await asyncio.sleep(duration)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await ticker
    elapsed = time.monotonic() - started
    lags.sort()
    return {
        "side": side,
        "elapsed": elapsed,
        "lag_p50_ms": 1000 * lags[len(lags) // 2] if lags else None,
        "lag_p99_ms": 1000 * lags[int(len(lags) * 0.99)] if lags else None,
        "lag_max_ms": 1000 * lags[-1] if lags else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "early_events": len(events),
        "early_event_sample": events[:1],
    }


# -- parent: emulator, batches, subprocesses, table -------------------------------------------


def create_batches(url: str, count: int) -> list[str]:
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21"}
    ids = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for i in range(count):
            body = {
                "requests": [
                    {
                        "custom_id": f"r{i}",
                        "params": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                    }
                ]
            }
            response = client.post("/v1/messages/batches", json=body)
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


def retrieve_calls(url: str) -> int:
    stats = httpx.get(f"{url}/_emulator/stats", headers={"x-api-key": KEY}, timeout=10).json()
    return int(stats["calls"].get("retrieve", 0))


def run_side(side: str, url: str, ids_file: str, n: int, interval: float, duration: float) -> dict[str, Any]:
    env = dict(os.environ)
    env["AIRFLOW_CONN_ANTHROPIX_DEFAULT"] = json.dumps({"conn_type": "anthropix", "password": KEY, "host": url})
    env["AIRFLOW_CONN_ANTHROPIC_DEFAULT"] = json.dumps({"conn_type": "anthropic", "password": KEY, "host": url})
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    argv = [sys.executable, __file__, "--child", side, "--ids-file", ids_file, "--n", str(n)]
    argv += ["--interval", str(interval), "--duration", str(duration)]
    before = retrieve_calls(url)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, preexec_fn=pin_to_cpu(1), check=False)
    after = retrieve_calls(url)
    if proc.returncode != 0:
        raise SystemExit(f"{side} side failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["polls"] = after - before
    result["polls_per_s"] = result["polls"] / result["elapsed"]
    result["nominal_per_s"] = n / interval
    result["share_of_nominal"] = result["polls_per_s"] / result["nominal_per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds each side runs (default 60)")
    parser.add_argument(
        "--scenario", action="append", default=None, help="N:INTERVAL, repeatable (default 1000:5 and 5000:30)"
    )
    parser.add_argument("--sides", default="ours,official", help="comma list of ours, official")
    parser.add_argument("--batches", type=int, default=500, help="distinct batches the triggers poll (default 500)")
    parser.add_argument("--json", action="store_true", help="print raw JSON results as well")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        with open(args.ids_file) as fh:
            ids = json.load(fh)
        result = asyncio.run(child_main(args.child, ids, args.n, args.interval, args.duration))
        print(json.dumps(result))
        return

    scenarios = [tuple(s.split(":")) for s in (args.scenario or ["1000:5", "5000:30"])]
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    emulator, url = start_emulator(KEY, "--processing-seconds", "100000", "--admin", cpu=0)
    rows = []
    try:
        ids = create_batches(url, args.batches)
        ids_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fanin-ids-{os.getpid()}.json")
        with open(ids_file, "w") as fh:
            json.dump(ids, fh)
        for n_text, interval_text in scenarios:
            n, interval = int(n_text), float(interval_text)
            for side in sides:
                print(f"running {side}: {n:,} triggers @ {interval:g} s for {args.duration:g} s ...", flush=True)
                result = run_side(side, url, ids_file, n, interval, args.duration)
                result["n"], result["interval"] = n, interval
                rows.append(result)
        os.unlink(ids_file)
    finally:
        emulator.terminate()
        emulator.wait(10)

    print()
    header = f"{'side':9} {'N':>6} {'every':>6} {'polls/s':>8} {'nominal':>8} {'share':>6} "
    header += f"{'lag p50':>8} {'lag p99':>8} {'lag max':>8} {'peak RSS':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['side']:9} {r['n']:>6,} {r['interval']:>5g}s {r['polls_per_s']:>8.1f} {r['nominal_per_s']:>8.1f} "
            f"{r['share_of_nominal']:>6.0%} {r['lag_p50_ms']:>6.1f}ms {r['lag_p99_ms']:>6.1f}ms "
            f"{r['lag_max_ms']:>6.0f}ms {r['peak_rss_mb']:>6.0f} MB"
        )
        if r["early_events"]:
            print(f"    note: {r['early_events']} triggers ended early, e.g. {r['early_event_sample']}")
    print(f"\n(each side ran {args.duration:g} s in its own process; polls counted by the emulator)")
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

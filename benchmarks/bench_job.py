"""A batch job of 1,000,000 requests (~1.5 GB JSONL): per-phase wall time and peak RSS, side by side.

- ours: :class:`~airflow_provider_anthropix.workflow.job.JobRunner` as ``BatchJobOperator`` drives
  it (the hook's sync client, the job's working folder on ``file://``): split + validate +
  create of 10 shards, the wait (the emulator's clock is moved on), one retry round for the
  requests that failed transiently, and the merged export of every result;
- official: what a user of ``airflow.providers.anthropic`` writes for the same data: the JSONL
  read into 10 lists of 100,000 dicts and ``AnthropicHook.create_batch(list)`` for each.

Each side runs in its own process (peak RSS is that process's ``ru_maxrss``; the import-only
baseline is printed). The emulator, in its own process, is the server for both.

    .venv/bin/python benchmarks/bench_job.py [--requests 1000000] [--shards 10] [--sides ours,official]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from emulator_process import start_emulator

KEY = "sk-ant-bench-job"
WORDS = ["batch", "request", "prompt", "customer", "order", "parcel", "invoice", "summary", "reply", "title"]
#: One request in this many fails on its first attempt with a transient error; the retry round sends it again.
TRANSIENT_EVERY = 1000


def write_input(path: str, count: int, prompt_bytes: int) -> int:
    """A deterministic JSONL of complete requests; prompts come from a pool so writing 1.5 GB stays quick."""
    rng = random.Random(11)
    pool = []
    for _ in range(997):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < prompt_bytes:
            words.append(rng.choice(WORDS))
        pool.append(" ".join(words))
    with open(path, "w") as out:
        for i in range(count):
            text = pool[i % len(pool)]
            if i % TRANSIENT_EVERY == 3:
                text += " [[emulator:errored-once:overloaded_error]]"
            request = {
                "custom_id": f"job-{i:07d}",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 256,
                    "messages": [{"role": "user", "content": f"{i} {text}"}],
                },
            }
            out.write(json.dumps(request) + "\n")
    return os.path.getsize(path)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of the process (user + system, every thread): less sensitive to a busy machine than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu_seconds() -> float:
    """The emulator's CPU time so far (its pid is passed to the child), 0.0 when unknown."""
    pid = int(os.environ.get("BENCH_EMULATOR_PID", "0"))
    if not pid:
        return 0.0
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class Clock:
    """Wall, own CPU and server CPU since it was made, and peak RSS: one phase's figures."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.server = time.perf_counter(), cpu_seconds(), server_cpu_seconds()

    def figures(self) -> dict[str, float]:
        return {
            "seconds": time.perf_counter() - self.wall,
            "cpu_seconds": cpu_seconds() - self.cpu,
            "server_cpu_seconds": server_cpu_seconds() - self.server,
            "peak_rss_mb": peak_rss_mb(),
        }


def advance_emulator(url: str, seconds: float) -> None:
    import requests

    # The admin endpoints take the API key, like the API.
    requests.post(
        f"{url}/_emulator/clock", json={"advance": seconds}, headers={"x-api-key": KEY}, timeout=60
    ).raise_for_status()


def ours(path: str, workdir: str, url: str, shards: int, count: int) -> dict[str, Any]:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
    from airflow_provider_anthropix.io.export import ExportOptions
    from airflow_provider_anthropix.io.job_files import JobWorkspace
    from airflow_provider_anthropix.workflow.job import Done, JobRunner, JobSettings, PlanOptions, Wait

    per_batch = -(-count // shards)
    hook = AnthropixHook()
    plan = PlanOptions(
        api_version=hook.config.anthropic_version, max_requests_per_batch=per_batch, max_bytes_per_batch=256 * 2**20
    )
    workspace = JobWorkspace(
        ObjectStoragePath(f"file://{workdir}/work"),
        requests_path=ObjectStoragePath(f"file://{path}"),
        destination=ObjectStoragePath(f"file://{workdir}/results"),
        plan=plan,
        export_options=ExportOptions(),
    )
    settings = JobSettings(max_batches_in_flight=shards, max_retry_rounds=1, max_errored_ratio=None, plan=plan)
    runner = JobRunner(hook, workspace, settings, key="bench", identity={"bench": "job"})
    phases: dict[str, dict[str, float]] = {}

    def phase(name: str, started: Clock) -> None:
        phases[name] = started.figures()

    started = Clock()
    step = runner.advance()  # plan (split + validate) and create every shard
    assert isinstance(step, Wait), step
    phase("split + validate + create", started)
    retry_round = 0
    while isinstance(step, Wait):
        advance_emulator(url, 3600)  # every batch in flight ends
        started = Clock()
        step = runner.advance()
        if isinstance(step, Wait):  # the round ended: scan for retries, create the next round
            retry_round += 1
            phase(f"round end + retry round {retry_round} create", started)
    done = step
    assert isinstance(done, Done), done
    phase("last round end + merged export", started)
    return {
        "side": "ours",
        "phases": phases,
        "peak_rss_mb": peak_rss_mb(),
        "lines": done.summary["lines"],
        "batches": done.summary["job"]["batches"],
        "retried": done.summary["job"]["retried"],
    }


def official(path: str, shards: int, count: int) -> dict[str, Any]:
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    per_batch = -(-count // shards)
    started = Clock()
    with open(path) as fh:
        requests = [json.loads(line) for line in fh if line.strip()]
    lists = [requests[i : i + per_batch] for i in range(0, len(requests), per_batch)]
    loaded = time.perf_counter() - started.wall
    hook = AnthropicHook()
    for part in lists:
        hook.create_batch(part)
    return {
        "side": "official",
        "phases": {"load + create": started.figures()},
        "load_seconds": loaded,
        "peak_rss_mb": peak_rss_mb(),
    }


def child(side: str, path: str, workdir: str, url: str, shards: int, count: int) -> dict[str, Any]:
    if side == "baseline":
        from airflow.providers.anthropic.hooks.anthropic import AnthropicHook  # noqa: F401

        from airflow_provider_anthropix.operators.job import BatchJobOperator  # noqa: F401

        return {"side": side, "peak_rss_mb": peak_rss_mb()}
    if side == "ours":
        return ours(path, workdir, url, shards, count)
    return official(path, shards, count)


def run_child(
    side: str, url: str, path: str, workdir: str, shards: int, count: int, emulator_pid: int
) -> dict[str, Any]:
    env = dict(os.environ)
    env["BENCH_EMULATOR_PID"] = str(emulator_pid)
    env["AIRFLOW_CONN_ANTHROPIX_DEFAULT"] = json.dumps(
        {"conn_type": "anthropix", "password": KEY, "host": url, "extra": {"timeout": [10, 600]}}
    )
    env["AIRFLOW_CONN_ANTHROPIC_DEFAULT"] = json.dumps({"conn_type": "anthropic", "password": KEY, "host": url})
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    command = [sys.executable, __file__, "--child", side, "--path", path, "--workdir", workdir, "--url", url]
    command += ["--shards", str(shards), "--requests", str(count)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--prompt-bytes", type=int, default=1400, help="prompt size; 1400 makes ~1.5 GB at 1M")
    parser.add_argument("--sides", default="ours,official")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.path, args.workdir, args.url, args.shards, args.requests)))
        return

    workdir = tempfile.mkdtemp(prefix="bench-job-")
    rows = []
    try:
        path = os.path.join(workdir, "requests.jsonl")
        started = time.perf_counter()
        size = write_input(path, args.requests, args.prompt_bytes)
        print(
            f"input: {args.requests:,} requests, {size / 1e6:,.0f} MB JSONL ({time.perf_counter() - started:.0f} s to write)"
        )
        for side in [s.strip() for s in ["baseline", *args.sides.split(",")] if s.strip()]:
            # A fresh emulator per side: neither pays for the other's batches held in its memory.
            emulator, url = start_emulator(KEY, "--processing-seconds", "600", "--admin")
            try:
                print(f"running {side} ...", flush=True)
                rows.append(
                    run_child(side, url, path, os.path.join(workdir, side), args.shards, args.requests, emulator.pid)
                )
            finally:
                emulator.terminate()
                emulator.wait(30)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    # cpu: the side's own CPU time, all threads; server cpu: the emulator's, in the same phase. On a
    # shared machine they move less than wall time does.
    print(f"{'side':9} {'phase':34} {'wall':>8} {'peak RSS':>10} {'cpu':>8} {'server cpu':>11}")
    print("-" * 85)
    for row in rows:
        if row["side"] == "baseline":
            continue
        for name, figures in row["phases"].items():
            print(
                f"{row['side']:9} {name:34} {figures['seconds']:>7.1f}s {figures['peak_rss_mb']:>7.0f} MB "
                f"{figures['cpu_seconds']:>7.1f}s {figures['server_cpu_seconds']:>10.1f}s"
            )
        if row["side"] == "ours":
            print(f"{'':9} {'(' + str(row['lines']) + ' lines, ' + str(row['batches']) + ' batches)':34}")
        else:
            print(f"{'':9} {'(of which reading into lists)':34} {row['load_seconds']:>7.1f}s")
    baseline = next(r for r in rows if r["side"] == "baseline")
    print(f"{'imports':9} {'':34} {'':>8} {baseline['peak_rss_mb']:>7.0f} MB")
    by_side = {row["side"]: row for row in rows}
    if "ours" in by_side and "official" in by_side:
        ours_create = by_side["ours"]["phases"]["split + validate + create"]["seconds"]
        theirs = by_side["official"]["phases"]["load + create"]["seconds"]
        print(
            f"\nsplit + validate + create: ours {ours_create:.1f} s vs official {theirs:.1f} s ({theirs / ours_create:.1f}x)"
        )


if __name__ == "__main__":
    main()

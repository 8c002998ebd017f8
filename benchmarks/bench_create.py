"""Create from a 100,000-request JSONL (~150 MB): ours vs the official provider's hook, wall time and peak RSS.

- ours: ``CreateBatchOperator(requests_path=...)``: reads the file line by line, validates every
  request with the connection version's rules, spools the encoded body to a temporary
  file and streams it (known content-length);
- official: what a user of ``airflow.providers.anthropic`` writes: load the JSONL into a list
  of dicts and call ``AnthropicHook.create_batch(requests)`` (the SDK builds the body).

Each side runs in its own subprocess (peak RSS is ``ru_maxrss`` of that process, imports
included; the import-only baseline is printed too). The emulator runs in its own process
and is the server for both; a raw POST of the same pre-encoded body shows its share of
the wall time.

    .venv/bin/python benchmarks/bench_create.py [--requests 100000] [--prompt-bytes 1400] [--sides ours,official]
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

KEY = "sk-ant-bench-create"
WORDS = [
    "batch",
    "request",
    "prompt",
    "customer",
    "order",
    "parcel",
    "invoice",
    "summary",
    "classify",
    "sentiment",
    "reply",
    "product",
    "title",
    "keyword",
    "engineer",
    "log",
    "cause",
    "commit",
    "deadline",
    "window",
    "retry",
    "answer",
    "question",
    "shop",
    "nightly",
    "report",
]


def write_input(path: str, count: int, prompt_bytes: int) -> int:
    """A deterministic JSONL of complete requests (model and max_tokens in each, as the official hook needs)."""
    rng = random.Random(7)
    with open(path, "w") as out:
        for i in range(count):
            words: list[str] = []
            length = 0
            while length < prompt_bytes:
                word = rng.choice(WORDS)
                words.append(word)
                length += len(word) + 1
            request = {
                "custom_id": f"req-{i:06d}",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 256,
                    "messages": [{"role": "user", "content": " ".join(words)}],
                },
            }
            out.write(json.dumps(request) + "\n")
    return os.path.getsize(path)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(side: str, path: str) -> dict[str, Any]:
    if side == "baseline":
        from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

        from airflow_provider_anthropix.operators.create import CreateBatchOperator

        return {"side": side, "peak_rss_mb": peak_rss_mb()}
    if side == "ours":
        from airflow_provider_anthropix.operators.create import CreateBatchOperator

        started = time.perf_counter()
        batch_id = CreateBatchOperator(task_id="create", requests_path=path).execute({})  # type: ignore[arg-type]
    else:
        from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

        started = time.perf_counter()
        with open(path) as fh:
            requests = [json.loads(line) for line in fh if line.strip()]
        batch_id = AnthropicHook().create_batch(requests).id
    return {"side": side, "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), "batch_id": batch_id}


def raw_post_seconds(url: str, path: str) -> float:
    """The emulator's share: POST an already-encoded body of the same requests, nothing else."""
    import requests

    body_path = path + ".body"
    with open(path, "rb") as src, open(body_path, "wb") as out:
        out.write(b'{"requests":[')
        for i, line in enumerate(src):
            if i:
                out.write(b",")
            out.write(line.rstrip(b"\n"))
        out.write(b"]}")
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21", "content-type": "application/json"}
    started = time.perf_counter()
    with open(body_path, "rb") as fh:
        response = requests.post(f"{url}/v1/messages/batches", data=fh, headers=headers, timeout=600)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    os.unlink(body_path)
    return seconds


def run_child(side: str, url: str, path: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["AIRFLOW_CONN_ANTHROPIX_DEFAULT"] = json.dumps(
        {"conn_type": "anthropix", "password": KEY, "host": url, "extra": {"timeout": [10, 600]}}
    )
    env["AIRFLOW_CONN_ANTHROPIC_DEFAULT"] = json.dumps({"conn_type": "anthropic", "password": KEY, "host": url})
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", side, "--path", path],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--prompt-bytes", type=int, default=1400, help="prompt size; 1400 makes ~150 MB at 100k")
    parser.add_argument("--sides", default="ours,official")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.path)))
        return

    workdir = tempfile.mkdtemp(prefix="bench-create-")
    emulator, url = start_emulator(KEY, "--processing-seconds", "100000", "--admin")
    try:
        path = os.path.join(workdir, "requests.jsonl")
        size = write_input(path, args.requests, args.prompt_bytes)
        print(f"input: {args.requests:,} requests, {size / 1e6:,.0f} MB JSONL", flush=True)
        server = raw_post_seconds(url, path)
        print(f"emulator alone (raw POST of the pre-encoded body): {server:.1f} s", flush=True)
        baseline = run_child("baseline", url, path)
        rows = []
        for side in [s.strip() for s in args.sides.split(",") if s.strip()]:
            print(f"running {side} ...", flush=True)
            rows.append(run_child(side, url, path))
    finally:
        emulator.terminate()
        emulator.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{'side':9} {'wall':>8} {'peak RSS':>10}")
    print("-" * 29)
    for row in rows:
        print(f"{row['side']:9} {row['seconds']:>7.1f}s {row['peak_rss_mb']:>7.0f} MB")
    print(f"{'imports':9} {'':>8} {baseline['peak_rss_mb']:>7.0f} MB  (both libraries imported, nothing done)")
    by_side = {row["side"]: row for row in rows}
    if "ours" in by_side and "official" in by_side:
        ours, official = by_side["ours"]["seconds"], by_side["official"]["seconds"]
        print(f"\nours is {official / ours:.1f}x faster end to end; the emulator takes ~{server:.1f} s of each run")
        if ours > server:
            print(f"client side only (wall minus the emulator's share): {(official - server) / (ours - server):.1f}x")


if __name__ == "__main__":
    main()

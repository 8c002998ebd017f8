"""Results export, side by side: this provider vs the official one vs a raw byte copy.

One run, results served by the emulator (its CLI, in its own process) on loopback, for
batches of 10,000 and 100,000 results of ~1 KB each. Every path runs in a fresh
subprocess so its peak RSS is its own:

- ``ours``: ``FetchBatchResultsOperator.execute`` to ``file://`` (JSONL, byte-exact, with
  manifest), also with ``compression="gzip"`` and ``format="parquet"``;
- ``official``: ``airflow.providers.anthropic``'s ``AnthropicHook.stream_batch_results``
  (the ``anthropic`` SDK's ``client.messages.batches.results()`` iterator, a pydantic
  object per line) with each result's JSON (``model_dump_json``) written to a file,
  which is what its users do today;
- ``raw``: ``requests`` streaming the response body to a file in 1 MB chunks: the
  practical limit of any client.

Reported per path: wall time of the transfer (imports and client set-up excluded; the
fastest of ``--repeat`` interleaved runs, as the machine may be shared), MB/s of results
bytes, peak RSS of the process (the highest of the runs) and how much the transfer added
to it. Peak RSS includes what importing Airflow costs (~125 MB), which every task
process pays before it runs any operator.

    .venv/bin/python benchmarks/bench_export.py [--sizes 10000,100000] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from emulator_process import start_emulator

KEY = "sk-ant-bench-export"
MB = 1_000_000
PATHS = ("raw", "ours", "official", "ours_gzip", "ours_parquet")
TARGETS = {"speedup_vs_official": 20.0, "share_of_raw": 0.5, "peak_rss_mb": 150.0}


# -- measurement helpers (used in the worker subprocesses) --------------------------------------


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    return _status_mb("VmRSS:")


def peak_rss_mb() -> float:
    """Peak RSS of this process alone.

    Not ``ru_maxrss``: Linux carries it over ``exec`` from the forking parent, which here
    has held a whole results stream.
    """
    return _status_mb("VmHWM:") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(path: str, url: str, batch_id: str, out: Path) -> dict[str, Any]:
    """Run one export path and return its figures (printed as JSON by ``--worker``)."""
    out.mkdir(parents=True, exist_ok=True)
    if path == "raw":
        import requests

        session = requests.Session()
        headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21"}
        base = rss_mb()
        started = time.perf_counter()
        size = 0
        with (
            session.get(f"{url}/v1/messages/batches/{batch_id}/results", headers=headers, stream=True) as response,
            open(out / "results.jsonl", "wb") as fh,
        ):
            response.raise_for_status()
            for chunk in response.iter_content(chunk_size=1 << 20):
                fh.write(chunk)
                size += len(chunk)
        seconds = time.perf_counter() - started
    elif path == "official":
        os.environ["AIRFLOW_CONN_ANTHROPIC_DEFAULT"] = json.dumps(
            {"conn_type": "anthropic", "password": KEY, "host": url}
        )
        from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

        hook = AnthropicHook()
        hook.get_batch(batch_id)  # client built and connection warmed, like ours
        base = rss_mb()
        started = time.perf_counter()
        size = 0
        with open(out / "results.jsonl", "w", encoding="utf-8") as fh:
            for result in hook.stream_batch_results(batch_id):
                line = result.model_dump_json() + "\n"
                fh.write(line)
                size += len(line)
        seconds = time.perf_counter() - started
    else:
        os.environ["AIRFLOW_CONN_ANTHROPIX_DEFAULT"] = json.dumps(
            {"conn_type": "anthropix", "password": KEY, "host": url}
        )
        from airflow.sdk.io import has_fs

        from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator

        options: dict[str, Any] = {}
        if path == "ours_gzip":
            options["compression"] = "gzip"
        elif path == "ours_parquet":
            options["format"] = "parquet"
            import pyarrow.parquet  # noqa: F401 - imported before the clock starts, like the others' libraries
        operator = FetchBatchResultsOperator(
            task_id="bench", batch_id=batch_id, destination=out.as_uri(), progress_interval=3600, **options
        )
        operator.hook.get_batch(batch_id)  # client built and connection warmed
        has_fs("file")  # Airflow's filesystem registry loads once per worker process
        base = rss_mb()
        started = time.perf_counter()
        summary = operator.execute({})  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
        manifest = json.loads((out / "_manifest.json").read_text())
        size = manifest["bytes_downloaded"]
        assert summary["complete"], summary
    return {
        "path": path,
        "seconds": seconds,
        "bytes": size,
        "output_bytes": sum(p.stat().st_size for p in out.iterdir() if p.is_file()),
        "base_rss_mb": base,
        "peak_rss_mb": peak_rss_mb(),
    }


# -- orchestration -------------------------------------------------------------------------------


def ended_batch(url: str, n: int) -> tuple[str, bytes]:
    """Create a batch of ``n`` requests, wait for its end, and fetch the stream once (warm-up, reference hash)."""
    import requests

    from airflow_provider_anthropix.api import ClientConfig, SyncClient

    client = SyncClient(ClientConfig(api_key=KEY, base_url=url, read_timeout=300))
    batch = client.create_batch(
        [
            {
                "custom_id": f"req-{i:06d}",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 1024,
                    "messages": [{"role": "user", "content": f"Summarise item {i} in one sentence."}],
                },
            }
            for i in range(n)
        ]
    )
    while not batch.is_ended:
        time.sleep(0.2)
        batch = client.get_batch(batch.id)
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21"}
    response = requests.get(f"{url}/v1/messages/batches/{batch.id}/results", headers=headers, timeout=300)
    response.raise_for_status()
    client.close()
    return batch.id, hashlib.sha256(response.content).digest()


def run_worker(path: str, url: str, batch_id: str, out: Path) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", path, "--url", url, "--batch", batch_id, "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{path} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def file_sha(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.digest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="batch sizes, comma separated")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"paths to run (of {', '.join(PATHS)})")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the fastest counts (default 3)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--batch", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.url, args.batch, Path(args.out))))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    paths = [p for p in args.paths.split(",") if p]
    proc, url = start_emulator(KEY, "--processing-seconds", "0.5", "--result-bytes", "1024", "--error-rate", "0.02")
    scratch = Path(tempfile.mkdtemp(prefix="bench_export_"))
    rows: list[dict[str, Any]] = []
    try:
        print(f"emulator {url}; {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
        for n in sizes:
            batch_id, reference = ended_batch(url, n)
            runs: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
            for _ in range(max(1, args.repeat)):  # interleaved, so a busy moment hits every path alike
                for path in paths:
                    out = scratch / f"{n}-{path}"
                    run = run_worker(path, url, batch_id, out)
                    if path in ("raw", "ours"):
                        run["byte_identical"] = file_sha(out / "results.jsonl") == reference
                    runs[path].append(run)
                    shutil.rmtree(out, ignore_errors=True)
            for path in paths:
                fastest = min(runs[path], key=lambda r: r["seconds"])
                row = {
                    "results": n,
                    **fastest,
                    "runs_seconds": [round(r["seconds"], 4) for r in runs[path]],
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[path]),
                }
                rows.append(row)
                print(
                    f"{n:>7,} {path:<13} {row['seconds']:7.2f} s {row['bytes'] / MB / row['seconds']:8.1f} MB/s "
                    f"peak RSS {row['peak_rss_mb']:6.1f} MB (+{row['peak_rss_mb'] - row['base_rss_mb']:5.1f} MB "
                    f"during the transfer) output {row['output_bytes'] / MB:7.1f} MB"
                    + (f" byte-identical={row['byte_identical']}" if "byte_identical" in row else ""),
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    verdicts = summarise(rows)
    for line in verdicts:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "verdicts": verdicts}, indent=2))


def summarise(rows: list[dict[str, Any]]) -> list[str]:
    """Targets from DESIGN.md, checked against the figures."""
    by = {(r["results"], r["path"]): r for r in rows}
    lines = []
    for n in sorted({r["results"] for r in rows}):
        ours, official, raw = by.get((n, "ours")), by.get((n, "official")), by.get((n, "raw"))
        if ours and official:
            speedup = official["seconds"] / ours["seconds"]
            ok = speedup >= TARGETS["speedup_vs_official"]
            lines.append(
                f"{n:,}: ours is {speedup:.1f}x faster than the official path (target >= 20x): "
                f"{'met' if ok else 'MISSED'}"
            )
        if ours and raw:
            share = (ours["bytes"] / ours["seconds"]) / (raw["bytes"] / raw["seconds"])
            ok = share >= TARGETS["share_of_raw"]
            lines.append(
                f"{n:,}: ours runs at {share:.2f}x a raw copy's throughput (target >= 0.5x): "
                f"{'met' if ok else 'MISSED'}"
            )
        if ours:
            ok = ours["peak_rss_mb"] <= TARGETS["peak_rss_mb"]
            lines.append(
                f"{n:,}: ours peaks at {ours['peak_rss_mb']:.0f} MB RSS (target <= 150 MB): {'met' if ok else 'MISSED'}"
            )
    sizes = sorted({r["results"] for r in rows})
    if len(sizes) >= 2 and (sizes[0], "ours") in by and (sizes[-1], "ours") in by:
        small, large = by[(sizes[0], "ours")], by[(sizes[-1], "ours")]
        growth = large["peak_rss_mb"] - small["peak_rss_mb"]
        lines.append(
            f"ours: peak RSS {small['peak_rss_mb']:.0f} MB at {sizes[0]:,} -> {large['peak_rss_mb']:.0f} MB "
            f"at {sizes[-1]:,} results ({growth:+.0f} MB)"
        )
    return lines


if __name__ == "__main__":
    main()

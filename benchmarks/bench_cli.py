"""What one ``anthropix batches list`` costs a person at a shell, by the way it finds its key.

Each sample is the wall time of the console script in a fresh process (start, imports, reading
the connection, one list call against the emulator on loopback holding 20 batches, the table
printed), the three cases interleaved so a busy machine hurts them alike:

- ``--conn-id, env``: ``AIRFLOW_CONN_ANTHROPIX_DEFAULT`` set (JSON), read without Airflow;
- ``--base-url``: the address on the command line, the key in ``ANTHROPIC_API_KEY``;
- ``--conn-id, Airflow``: the variable unset, the connection served by Airflow's configured
  secrets backend (the local-file one here), so Airflow is imported to read it. Before the
  environment variable was read directly, every ``--conn-id`` call paid this.

Two rounds, as in ``bench_import.py``: ``bytecode cached``, what an installed package has (pip
and Airflow's images compile ``.pyc``; here the probes share a private ``PYTHONPYCACHEPREFIX``,
filled by unmeasured runs), the figure the target is about; and ``no bytecode cache``
(``PYTHONDONTWRITEBYTECODE=1`` and an empty cache, as after ``uv pip install`` without
``--compile-bytecode``): every module compiled from source in every process. The target:
``--conn-id`` with an environment connection <= 1 s.

    .venv/bin/python benchmarks/bench_cli.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emulator_process import start_emulator

KEY = "sk-ant-bench-cli"
ANTHROPIX = str(Path(sys.executable).parent / "anthropix")
TARGET_S = 1.0


def make_batches(url: str, n: int) -> None:
    params = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        for i in range(n):
            body = {"requests": [{"custom_id": f"r{j}", "params": params} for j in range(i % 5 + 1)]}
            http.post("/v1/messages/batches", json=body).raise_for_status()


def cases(
    url: str, home: str, connections: Path, pycache: str, *, write: bool
) -> dict[str, tuple[list[str], dict[str, str]]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_") and k != "ANTHROPIC_API_KEY"}
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    base |= {"AIRFLOW_HOME": home, "PYTHONPYCACHEPREFIX": pycache}
    if not write:
        base["PYTHONDONTWRITEBYTECODE"] = "1"
    conn = json.dumps({"conn_type": "anthropix", "password": KEY, "host": url})
    return {
        "--conn-id, env": (
            ["--conn-id", "anthropix_default"],
            base | {"AIRFLOW_CONN_ANTHROPIX_DEFAULT": conn},
        ),
        "--base-url": (["--base-url", url], base | {"ANTHROPIC_API_KEY": KEY}),
        "--conn-id, Airflow": (
            ["--conn-id", "anthropix_default"],
            base
            | {
                "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
                "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"connections_file_path": str(connections)}),
            },
        ),
    }


def run_once(flags: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([ANTHROPIX, "batches", "list", *flags], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or "20 batches" not in done.stdout:
        raise SystemExit(f"anthropix batches list {' '.join(flags)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per case (default 7)")
    parser.add_argument("--json", action="store_true", help="print the medians as one JSON line as well")
    args = parser.parse_args()
    proc, url = start_emulator(KEY, "--processing-seconds", "0.1")
    try:
        make_batches(url, 20)
        with tempfile.TemporaryDirectory(prefix="bench-cli-") as scratch:
            connections = Path(scratch) / "connections.json"
            connections.write_text(
                json.dumps({"anthropix_default": {"conn_type": "anthropix", "password": KEY, "host": url}})
            )
            home = Path(scratch) / "home"
            home.mkdir()
            cached, empty = str(Path(scratch) / "pycache"), str(Path(scratch) / "empty")
            for flags, env in cases(url, str(home), connections, cached, write=True).values():
                run_once(flags, env)  # fills the bytecode cache, unmeasured: the install-time compile
            rounds = {
                "bytecode cached": cases(url, str(home), connections, cached, write=False),
                "no bytecode cache": cases(url, str(home), connections, empty, write=False),
            }
            samples: dict[str, dict[str, list[float]]] = {
                title: {name: [] for name in table} for title, table in rounds.items()
            }
            for title, table in rounds.items():
                for _ in range(args.repeats):
                    for name, (flags, env) in table.items():
                        samples[title][name].append(run_once(flags, env))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    medians: dict[str, dict[str, float]] = {}
    for title, by_case in samples.items():
        print(f"{title}: anthropix batches list (20 batches), wall time of a fresh process, {args.repeats} runs each")
        print(f"{'case':<20} {'median':>8} {'min':>8} {'max':>8}")
        medians[title] = {}
        for name, values in by_case.items():
            medians[title][name] = statistics.median(values)
            print(f"{name:<20} {medians[title][name]:>7.2f}s {min(values):>7.2f}s {max(values):>7.2f}s")
        print()
    fast = medians["bytecode cached"]["--conn-id, env"]
    verdict = "meets" if fast <= TARGET_S else "MISSES"
    print(f"--conn-id with an environment connection, bytecode cached: {fast:.2f} s ({verdict} the <= {TARGET_S:g} s "
          f"target); through Airflow {medians['bytecode cached']['--conn-id, Airflow']:.2f} s")  # fmt: skip
    if args.json:
        print(json.dumps({t: {n: round(v, 3) for n, v in m.items()} for t, m in medians.items()}))


if __name__ == "__main__":
    main()

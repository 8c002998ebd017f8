"""Entry point of ``make e2e`` / ``make chaos``: run scenarios against a real Airflow deployment.

Usage (normally through ``scripts/e2e.sh``, which adds a shell ``trap`` as a second safety net)::

    .venv/bin/python tests/e2e/run.py --run-dir DIR [--chaos] [--only NAME[,NAME]] [--list]

Each scenario triggers a DAG run through the REST API and checks what a user would check:
the run's state, the results manifest against the files, the emulator's count of batches
(never paid twice) and a scan for the API key. Prints a summary and writes
``<run_dir>/summary.json``; exits non-zero on the first failed check, after printing the
logs of the processes involved.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deployment import Deployment, E2EFailure, deployment, say
from scenarios import SCENARIOS, Context

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, required=True, help="empty directory for this run")
    parser.add_argument("--chaos", action="store_true", help="also run the chaos scenarios")
    parser.add_argument("--only", default="", help="comma-separated scenario names to run")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)

    if args.list:
        for scenario in SCENARIOS:
            kind = "chaos" if scenario.chaos else "e2e" if scenario.default else "extra"
            print(f"{scenario.name:20} {kind:6} {scenario.doc}")
        return 0
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    chosen = [s for s in SCENARIOS if (s.name in wanted if wanted else s.default and (args.chaos or not s.chaos))]

    started = time.monotonic()
    # Recognisable, and never a real key: the secret scans look for exactly this string.
    api_key = f"sk-ant-e2e-LEAKCANARY-{secrets.token_hex(12)}"
    results: list[dict[str, Any]] = []
    dags = sorted({p for s in chosen for p in s.dag_files(REPO)})
    status = 0
    dep: Deployment | None = None
    try:
        with deployment(Deployment, run_dir=args.run_dir.resolve(), api_key=api_key, dag_files=dags) as dep:
            ctx = Context(dep=dep, repo=REPO, api_key=api_key)
            for scenario in chosen:
                say(f"=== scenario {scenario.name}: {scenario.doc}")
                t = time.monotonic()
                outcome = scenario.run(ctx)
                outcome.update(name=scenario.name, seconds=round(time.monotonic() - t, 1), ok=True)
                results.append(outcome)
                say(f"=== scenario {scenario.name} passed in {outcome['seconds']}s: {outcome}")
            ctx.final_checks(results)
    except (E2EFailure, Exception) as exc:
        status = 1
        print(f"\nE2E FAILED: {exc}\n", file=sys.stderr)
        if not isinstance(exc, E2EFailure):
            traceback.print_exc()
        if dep is not None:
            print(dep.dump_failure(), file=sys.stderr)
    total = round(time.monotonic() - started, 1)
    runs = [r for r in results if "batches_created" in r]
    totals = {
        "scenarios_passed": len(runs),
        "dag_runs": sum(len(r.get("runs", [r.get("run_id")])) for r in runs),
        "batches_created": sum(int(r["batches_created"]) for r in runs),
        "result_bytes_compared": sum(int(r.get("bytes_compared", 0)) for r in runs),
        "key_occurrences": 0 if any(r["name"] == "secret-scan" for r in results) else None,
    }
    summary = {"ok": status == 0, "seconds": total, "totals": totals, "scenarios": results}
    (args.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))
    say(f"{'PASSED' if status == 0 else 'FAILED'}: {len(results)} scenario(s) in {total}s")
    return status


if __name__ == "__main__":
    sys.exit(main())

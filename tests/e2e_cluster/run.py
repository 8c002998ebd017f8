"""Entry point of ``make e2e-cluster``: the scenarios of ``cluster_scenarios.py`` against a real cluster.

Usage (normally through ``scripts/e2e_cluster.sh``, which installs PostgreSQL and Redis
when missing and adds a shell ``trap`` as a second safety net)::

    .venv/bin/python tests/e2e_cluster/run.py --run-dir DIR [--only NAME[,NAME]] [--no-chaos] [--list]

Prints a summary (with each scenario's time) and writes ``<run_dir>/summary.json``; exits
non-zero on the first failed check, after printing the logs of the processes involved.
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

from cluster import ClusterDeployment, E2EFailure, say
from cluster_scenarios import BUCKET, SCENARIOS, dag_files, s3_bytes, s3_keys
from deployment import deployment
from scenarios import Context

REPO = Path(__file__).resolve().parents[2]


class ClusterContext(Context):
    """The e2e context; its secret scan also reads every object in the S3 server."""

    def final_checks(self, results: list[dict[str, Any]]) -> None:
        super().final_checks(results)
        dep = self.dep
        assert isinstance(dep, ClusterDeployment)
        keys = s3_keys(dep, "")
        scanned, hits = 0, []
        for key in keys:
            data = s3_bytes(dep, f"s3://{BUCKET}/{key}")
            scanned += len(data)
            if self.api_key.encode() in data or self.key_fragment.encode() in data:
                hits.append(key)
        if hits:
            raise E2EFailure(f"the API key leaked into S3 objects: {hits}")
        results[-1]["s3_objects_scanned"] = len(keys)
        results[-1]["s3_bytes_scanned"] = scanned
        leaked = dep.leaked()
        if leaked:
            raise E2EFailure(f"processes outlived their service: {leaked}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, required=True, help="empty directory for this run")
    parser.add_argument("--no-chaos", action="store_true", help="skip the chaos scenarios")
    parser.add_argument("--only", default="", help="comma-separated scenario names to run")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for scenario in SCENARIOS:
            print(f"{scenario.name:18} {'chaos' if scenario.chaos else 'e2e':6} {scenario.doc}")
        return 0
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    chosen = [s for s in SCENARIOS if (s.name in wanted if wanted else not (args.no_chaos and s.chaos))]

    started = time.monotonic()
    api_key = f"sk-ant-e2e-LEAKCANARY-{secrets.token_hex(12)}"
    results: list[dict[str, Any]] = []
    status = 0
    dep: ClusterDeployment | None = None
    run_dir = args.run_dir.resolve()
    try:
        with deployment(ClusterDeployment, run_dir=run_dir, api_key=api_key, dag_files=dag_files(REPO)) as dep:
            results.append({"name": "startup", "ok": True, "seconds": round(time.monotonic() - started, 1)})
            ctx = ClusterContext(dep=dep, repo=REPO, api_key=api_key)
            for scenario in chosen:
                say(f"=== scenario {scenario.name}: {scenario.doc}")
                t = time.monotonic()
                outcome = scenario.run(ctx)
                outcome.update(name=scenario.name, seconds=round(time.monotonic() - t, 1), ok=True)
                results.append(outcome)
                say(f"=== scenario {scenario.name} passed in {outcome['seconds']}s: {outcome}")
            ctx.final_checks(results)
        # Everything is stopped now: nothing of this run may be left.
        assert dep is not None
        leaked = dep.leaked()
        if leaked:
            raise E2EFailure(f"processes left after the deployment stopped: {leaked}")
    except (E2EFailure, Exception) as exc:
        status = 1
        print(f"\nE2E-CLUSTER FAILED: {exc}\n", file=sys.stderr)
        if not isinstance(exc, E2EFailure):
            traceback.print_exc()
        if dep is not None:
            print(dep.dump_failure(), file=sys.stderr)
    total = round(time.monotonic() - started, 1)
    summary = {"ok": status == 0, "seconds": total, "scenarios": results}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))
    for r in results:
        say(f"{r['name']:18} {r.get('seconds', '-'):>7}s")
    say(f"{'PASSED' if status == 0 else 'FAILED'}: {len(results)} step(s) in {total}s")
    return status


if __name__ == "__main__":
    sys.exit(main())

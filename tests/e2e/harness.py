"""The command line and main loop of the end-to-end runs: pick scenarios, start a deployment, run, report.

``tests/e2e/run.py`` (``make e2e``, ``make chaos``) runs :class:`Harness` as it is;
``tests/e2e_cluster/run.py`` (``make e2e-cluster``) runs a subclass with the cluster's
deployment, context and scenarios.

Each scenario triggers DAG runs through the REST API and checks what a user would check;
after the last one the context's final checks scan for the API key. Prints a summary (with
each step's time) and writes ``<run_dir>/summary.json``; exits non-zero on the first failed
check, after printing the logs of the processes involved.
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
from scenarios import SCENARIOS, Context, Scenario

REPO = Path(__file__).resolve().parents[2]


class Harness:
    """One end-to-end run: what it deploys, the context its scenarios get, and the scenarios.

    :param description: the ``--help`` text (the entry point's docstring).
    """

    name = "e2e"
    deployment_class: type[Deployment] = Deployment
    context_class: type[Context] = Context
    scenarios: list[Scenario] = SCENARIOS
    #: chaos scenarios run unless ``--no-chaos`` (instead of only with ``--chaos``)
    chaos_by_default = False

    def __init__(self, description: str | None = None) -> None:
        self.description = description or __doc__

    def after_stop(self, dep: Deployment) -> None:
        """Checks once every process of the deployment is stopped (none here)."""

    def choose(self, argv: list[str] | None) -> argparse.Namespace | None:
        """Parse the command line; the scenarios to run as ``args.chosen``, or None when only listing them."""
        parser = argparse.ArgumentParser(
            description=self.description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        parser.add_argument("--run-dir", type=Path, required=True, help="empty directory for this run")
        if self.chaos_by_default:
            parser.add_argument("--no-chaos", dest="chaos", action="store_false", help="skip the chaos scenarios")
        else:
            parser.add_argument("--chaos", action="store_true", help="also run the chaos scenarios")
        parser.add_argument("--only", default="", help="comma-separated scenario names to run")
        parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
        args = parser.parse_args(argv)
        if args.list:
            for scenario in self.scenarios:
                kind = "chaos" if scenario.chaos else "e2e" if scenario.default else "extra"
                print(f"{scenario.name:22} {kind:6} {scenario.doc}")
            return None
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {s.name for s in self.scenarios}
        if unknown:
            parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        args.chosen = [
            s for s in self.scenarios if (s.name in wanted if wanted else s.default and (args.chaos or not s.chaos))
        ]
        return args

    def main(self, argv: list[str] | None = None) -> int:
        args = self.choose(argv)
        if args is None:
            return 0
        chosen: list[Scenario] = args.chosen
        run_dir: Path = args.run_dir.resolve()
        started = time.monotonic()
        # Recognisable, and never a real key: the secret scans look for exactly this string.
        api_key = f"sk-ant-e2e-LEAKCANARY-{secrets.token_hex(12)}"
        results: list[dict[str, Any]] = []
        dags = sorted({p for s in chosen for p in s.dag_files(REPO)})
        status = 0
        dep: Deployment | None = None
        try:
            with deployment(self.deployment_class, run_dir=run_dir, api_key=api_key, dag_files=dags) as dep:
                results.append({"name": "startup", "ok": True, "seconds": round(time.monotonic() - started, 1)})
                ctx = self.context_class(dep=dep, repo=REPO, api_key=api_key)
                for scenario in chosen:
                    say(f"=== scenario {scenario.name}: {scenario.doc}")
                    t = time.monotonic()
                    outcome = scenario.run(ctx)
                    outcome.update(name=scenario.name, seconds=round(time.monotonic() - t, 1), ok=True)
                    results.append(outcome)
                    say(f"=== scenario {scenario.name} passed in {outcome['seconds']}s: {outcome}")
                ctx.final_checks(results)
            self.after_stop(dep)
        except (E2EFailure, Exception) as exc:
            status = 1
            print(f"\n{self.name.upper()} FAILED: {exc}\n", file=sys.stderr)
            if not isinstance(exc, E2EFailure):
                traceback.print_exc()
            if dep is not None:
                print(dep.dump_failure(), file=sys.stderr)
        total = round(time.monotonic() - started, 1)
        summary = {"ok": status == 0, "seconds": total, "totals": totals(results), "scenarios": results}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        print(json.dumps(summary, indent=2, default=str))
        for r in results:
            say(f"{r['name']:22} {r.get('seconds', '-'):>7}s")
        say(f"{'PASSED' if status == 0 else 'FAILED'}: {len(results)} step(s) in {total}s")
        return status


def totals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's figures over every scenario that created batches."""
    runs = [r for r in results if "batches_created" in r]
    return {
        "scenarios_passed": len(runs),
        "dag_runs": sum(len(r.get("runs", [r.get("run_id")])) for r in runs),
        "batches_created": sum(int(r["batches_created"]) for r in runs),
        "result_bytes_compared": sum(int(r.get("bytes_compared", 0)) for r in runs),
        "key_occurrences": 0 if any(r["name"] == "secret-scan" for r in results) else None,
    }

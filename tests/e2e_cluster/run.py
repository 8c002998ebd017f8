"""Entry point of ``make e2e-cluster``: the scenarios of ``cluster_scenarios.py`` against a real cluster.

Usage (normally through ``scripts/e2e_cluster.sh``, which installs PostgreSQL and Redis
when missing and adds a shell ``trap`` as a second safety net)::

    .venv/bin/python tests/e2e_cluster/run.py --run-dir DIR [--only NAME[,NAME]] [--no-chaos] [--list]

Prints a summary (with each scenario's time) and writes ``<run_dir>/summary.json``; exits
non-zero on the first failed check, after printing the logs of the processes involved. The
loop is the e2e run's (``tests/e2e/harness.py``), with the cluster's deployment, context and
scenarios, chaos included by default, and a last check that nothing outlived the deployment.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import ClusterDeployment
from cluster_scenarios import SCENARIOS, ClusterContext
from deployment import Deployment, E2EFailure
from harness import Harness


class ClusterHarness(Harness):
    name = "e2e-cluster"
    deployment_class = ClusterDeployment
    context_class = ClusterContext
    scenarios = SCENARIOS
    chaos_by_default = True

    def after_stop(self, dep: Deployment) -> None:
        # Everything is stopped now: nothing of this run may be left.
        assert isinstance(dep, ClusterDeployment)
        leaked = dep.leaked()
        if leaked:
            raise E2EFailure(f"processes left after the deployment stopped: {leaked}")


if __name__ == "__main__":
    sys.exit(ClusterHarness(__doc__).main())

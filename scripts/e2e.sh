#!/usr/bin/env bash
# End-to-end run against a real Airflow 3 deployment (make e2e; make chaos adds --chaos).
#
# Starts the emulator and Airflow's api-server, dag-processor, scheduler and triggerer
# (LocalExecutor, SQLite) in a temporary directory, triggers DAG runs through the REST API
# and checks results, batch counts and secret hygiene. Everything it starts is stopped on
# every exit path: by the Python harness, and by this trap if the harness itself dies.
#
#   scripts/e2e.sh                 # the deployment scenarios (~2-3 min)
#   scripts/e2e.sh --chaos         # plus the chaos scenarios
#   scripts/e2e.sh --only NAME     # one scenario (see --list)
#   E2E_KEEP=1 scripts/e2e.sh      # keep the run directory (logs, database) for inspection
#
# The run directory, time limit (E2E_TIMEOUT, default 900 s) and trap: scripts/e2e_lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/e2e_lib.sh
e2e_run e2e tests/e2e/run.py 900 30 "$@"

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
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${E2E_PYTHON:-.venv/bin/python}"
RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/anthropix-e2e.XXXXXX")"

cleanup() {
    rc=$?
    trap - EXIT INT TERM
    if [ -s "$RUN_DIR/pids" ]; then
        # Each pid leads its own process group (started with start_new_session).
        while read -r pid _name; do
            kill -KILL -- "-$pid" 2>/dev/null || true
        done <"$RUN_DIR/pids"
    fi
    if [ "${E2E_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        echo "e2e: run directory kept for inspection: $RUN_DIR" >&2
    else
        rm -rf "$RUN_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT

# A hard ceiling, so a hang can never block CI: the harness's own waits are all bounded.
# Run in the background and `wait`, so a signal to this script is handled at once: it is
# passed on to the harness (which stops its services cleanly), then the EXIT trap above
# kills whatever is left.
timeout --signal=TERM --kill-after=30 "${E2E_TIMEOUT:-900}" "$PY" tests/e2e/run.py --run-dir "$RUN_DIR" "$@" &
child=$!
forward() {
    trap - INT TERM
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
    exit "$1"
}
trap 'forward 130' INT
trap 'forward 143' TERM
wait "$child"

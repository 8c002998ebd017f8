#!/usr/bin/env bash
# `make demo`: the nightly example DAG end to end on this machine, against the local emulator.
#
# Starts the emulator on a free loopback port, makes a throw-away AIRFLOW_HOME (SQLite),
# points the anthropix_default connection at the emulator through the environment, runs
# `airflow dags test nightly_batch` (the wait is deferred and its trigger runs in-line) and
# prints where the results landed. The emulator and the temporary home are removed on every
# exit path (success, failure, Ctrl-C).
#
# Settings: DEMO_OUTPUT (default out/nightly in the repo), DEMO_ERROR_RATE (default 0.02),
# DEMO_PROCESSING_SECONDS (default 5), PYTHON (default .venv/bin/python).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
AIRFLOW="$(dirname "$PYTHON")/airflow"
OUTPUT_DIR="${DEMO_OUTPUT:-$REPO/out/nightly}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/anthropix-demo.XXXXXX")"
EMULATOR_PID=""

cleanup() {
    local status=$?
    if [[ -n "$EMULATOR_PID" ]] && kill -0 "$EMULATOR_PID" 2>/dev/null; then
        kill "$EMULATOR_PID" 2>/dev/null || true
        wait "$EMULATOR_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "==> Starting the Anthropix emulator (loopback, free port)"
"$PYTHON" -m airflow_provider_anthropix.emulator --port 0 \
    --processing-seconds "${DEMO_PROCESSING_SECONDS:-5}" \
    --error-rate "${DEMO_ERROR_RATE:-0.02}" >"$WORK/emulator.log" 2>&1 &
EMULATOR_PID=$!

URL=""
for _ in $(seq 1 200); do
    URL="$(sed -n 's/^Anthropix emulator listening on \(http:\/\/[^ ]*\).*$/\1/p' "$WORK/emulator.log" | head -n 1)"
    [[ -n "$URL" ]] && break
    if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
        echo "The emulator exited before it was ready:" >&2
        cat "$WORK/emulator.log" >&2
        exit 1
    fi
    sleep 0.05
done
if [[ -z "$URL" ]]; then
    echo "The emulator did not report its address within 10 s:" >&2
    cat "$WORK/emulator.log" >&2
    exit 1
fi
echo "    emulator at $URL"

export AIRFLOW_HOME="$WORK/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$REPO/example_dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__LOGGING__LOGGING_LEVEL="${DEMO_LOG_LEVEL:-INFO}"
# The demo key is not a secret: the emulator accepts any key.
export AIRFLOW_CONN_ANTHROPIX_DEFAULT="{\"conn_type\": \"anthropix\", \"password\": \"sk-ant-demo-key\", \"host\": \"$URL\"}"
export ANTHROPIX_NIGHTLY_OUTPUT="file://$OUTPUT_DIR"
export ANTHROPIX_NIGHTLY_POLL_INTERVAL="${DEMO_POLL_INTERVAL:-2}"
mkdir -p "$AIRFLOW_HOME" "$OUTPUT_DIR"

echo "==> Preparing a temporary Airflow home (SQLite) in $AIRFLOW_HOME"
"$AIRFLOW" db migrate >"$WORK/db-migrate.log" 2>&1 || { cat "$WORK/db-migrate.log" >&2; exit 1; }

echo "==> airflow dags test nightly_batch"
"$AIRFLOW" dags test nightly_batch 2>&1 | tee "$WORK/dags-test.log"
if ! grep -q "state=success" "$WORK/dags-test.log"; then
    echo "The DAG run did not succeed (log above)." >&2
    exit 1
fi

MANIFEST="$(find "$OUTPUT_DIR" -name _manifest.json -newer "$WORK/emulator.log" | sort | tail -n 1)"
echo
echo "==> Done."
if [[ -n "$MANIFEST" ]]; then
    echo "    Results:  $(dirname "$MANIFEST")"
    echo "    Manifest: $MANIFEST"
    grep -h "^Batch .* ended at\|^Tokens:" "$WORK/dags-test.log" | sed 's/^/    /' || true
else
    echo "    Output folder: $OUTPUT_DIR (no manifest found for this run)" >&2
    exit 1
fi

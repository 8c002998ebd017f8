# Sourced by scripts/e2e.sh and scripts/e2e_cluster.sh (not run on its own): start a Python
# harness on a fresh run directory under a hard time limit, and stop everything it started on
# every exit path.
#
#   e2e_run NAME ENTRY LIMIT KILL_AFTER [ARGS...]
#
# NAME names the messages and the run directory (${TMPDIR:-/tmp}/anthropix-NAME.XXXXXX); ENTRY
# is the harness (given --run-dir and ARGS); LIMIT is the time limit in seconds (E2E_TIMEOUT
# overrides it), KILL_AFTER the grace after it before SIGKILL. E2E_PYTHON names the
# interpreter, E2E_KEEP=1 keeps the run directory, E2E_T0 (epoch seconds) is when the run
# began for the closing line (a caller that prepared the machine first sets it).

e2e_run() {
    E2E_NAME=$1
    local entry=$2 limit=$3 kill_after=$4
    shift 4
    E2E_T0=${E2E_T0:-$(date +%s)}
    E2E_RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/anthropix-$E2E_NAME.XXXXXX")"
    trap _e2e_cleanup EXIT
    # A hard ceiling, so a hang can never block CI: the harness's own waits are all bounded.
    # Run in the background and `wait`, so a signal to this script is handled at once: it is
    # passed on to the harness (which stops its services cleanly), then the EXIT trap kills
    # whatever is left.
    timeout --signal=TERM --kill-after="$kill_after" "${E2E_TIMEOUT:-$limit}" \
        "${E2E_PYTHON:-.venv/bin/python}" "$entry" --run-dir "$E2E_RUN_DIR" "$@" &
    E2E_CHILD=$!
    trap '_e2e_forward 130' INT
    trap '_e2e_forward 143' TERM
    wait "$E2E_CHILD"
}

_e2e_cleanup() {
    rc=$?
    trap - EXIT INT TERM
    if [ -s "$E2E_RUN_DIR/pids" ]; then
        # Each pid leads its own process group (started with start_new_session).
        while read -r pid _name; do
            kill -KILL -- "-$pid" 2>/dev/null || true
        done <"$E2E_RUN_DIR/pids"
    fi
    if [ "${E2E_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        echo "$E2E_NAME: run directory kept for inspection: $E2E_RUN_DIR" >&2
    else
        rm -rf "$E2E_RUN_DIR"
    fi
    echo "$E2E_NAME: finished in $(($(date +%s) - E2E_T0)) s (exit $rc)" >&2
    exit "$rc"
}

_e2e_forward() {
    trap - INT TERM
    kill -TERM "$E2E_CHILD" 2>/dev/null || true
    wait "$E2E_CHILD" 2>/dev/null || true
    exit "$1"
}

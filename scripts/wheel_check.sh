#!/usr/bin/env bash
# `make wheel-check`: install the built wheel the way a user does and run the nightly DAG on it.
#
# The repository's source is never on sys.path here: a fresh virtualenv in a temporary folder
# gets the wheel from dist/ (not editable) with the lock file as constraints, so only the
# declared dependencies are installed, and every command runs from that folder. Then:
#   1. the installed version equals __version__ and the package comes from site-packages;
#   2. `airflow providers list` shows the provider (entry point and provider info work);
#   3. the emulator starts from the wheel (`python -m airflow_provider_anthropix.emulator`);
#   4. `airflow dags test nightly_batch` succeeds against it, with example_dags copied to a
#      temporary dags folder, and a results manifest lands.
# A file missing from the wheel or a dependency missing from pyproject.toml fails one of these.
#
# Settings: WHEEL (default: the newest dist/*.whl), LOCK (default requirements/lock-airflow-3.3.txt),
# PYTHON (default python3), UV (default .venv/bin/uv).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
UV="${UV:-$REPO/.venv/bin/uv}"
LOCK="${LOCK:-$REPO/requirements/lock-airflow-3.3.txt}"
WHEEL="${WHEEL:-$(ls -t "$REPO"/dist/airflow_provider_anthropix-*.whl 2>/dev/null | head -n 1)}"
if [[ -z "$WHEEL" || ! -f "$WHEEL" ]]; then
    echo "No wheel in $REPO/dist: run 'make dist' first." >&2
    exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/anthropix-wheel.XXXXXX")"
EMULATOR_PID=""
cleanup() {
    local status=$?
    if [[ -n "$EMULATOR_PID" ]] && kill -0 "$EMULATOR_PID" 2>/dev/null; then
        kill "$EMULATOR_PID" 2>/dev/null || true
        wait "$EMULATOR_PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 ]]; then
        for log in "$WORK"/*.log; do
            [[ -f "$log" ]] && { echo "--- $log (last 40 lines)" >&2; tail -n 40 "$log" >&2; }
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$WORK"

echo "==> Fresh virtualenv with $(basename "$WHEEL") (constraints: $(basename "$LOCK"))"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$UV" pip install -q --python "$VPY" -c "$LOCK" "$WHEEL" >"$WORK/install.log" 2>&1
# Other helpers' extras (test tools, pyarrow, s3fs) must not be there: this is a plain install.
if "$VPY" -c "import pytest" 2>/dev/null; then
    echo "pytest is installed in the wheel venv: the check would not catch undeclared dependencies." >&2
    exit 1
fi

echo "==> Installed version and location"
"$VPY" - <<'PY'
import importlib.metadata
import pathlib
import sys

import airflow_provider_anthropix as pkg

installed = importlib.metadata.version("airflow-provider-anthropix")
location = pathlib.Path(pkg.__file__).resolve()
print(f"    {installed} from {location.parent}")
if installed != pkg.__version__:
    sys.exit(f"installed version {installed} != __version__ {pkg.__version__}")
if "site-packages" not in location.parts:
    sys.exit(f"the package was imported from {location}, not from the installed wheel")
if not (location.parent / "py.typed").is_file():
    sys.exit("py.typed is missing from the wheel")
PY

export AIRFLOW_HOME="$WORK/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$WORK/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
mkdir -p "$AIRFLOW_HOME" "$WORK/out"
cp -R "$REPO/example_dags" "$WORK/dags"

echo "==> airflow providers list"
"$WORK/venv/bin/airflow" providers list >"$WORK/providers.log" 2>&1
if ! grep -q "airflow-provider-anthropix" "$WORK/providers.log"; then
    echo "airflow providers list does not show airflow-provider-anthropix" >&2
    exit 1
fi
grep "airflow-provider-anthropix" "$WORK/providers.log" | sed 's/^/    /'

echo "==> Emulator from the wheel"
"$VPY" -m airflow_provider_anthropix.emulator --port 0 --processing-seconds 2 --error-rate 0.02 \
    >"$WORK/emulator.log" 2>&1 &
EMULATOR_PID=$!
URL=""
for _ in $(seq 1 400); do
    URL="$(sed -n 's/^Anthropix emulator listening on \(http:\/\/[^ ]*\).*$/\1/p' "$WORK/emulator.log" | head -n 1)"
    [[ -n "$URL" ]] && break
    kill -0 "$EMULATOR_PID" 2>/dev/null || { echo "The emulator exited before it was ready." >&2; exit 1; }
    sleep 0.05
done
[[ -n "$URL" ]] || { echo "The emulator did not report its address within 20 s." >&2; exit 1; }
echo "    $URL"

echo "==> airflow dags test nightly_batch (from the installed wheel)"
# The emulator accepts any key: this one is not a secret.
export AIRFLOW_CONN_ANTHROPIX_DEFAULT="{\"conn_type\": \"anthropix\", \"password\": \"sk-ant-wheel-check\", \"host\": \"$URL\"}"
export ANTHROPIX_NIGHTLY_OUTPUT="file://$WORK/out"
export ANTHROPIX_NIGHTLY_POLL_INTERVAL=1
"$WORK/venv/bin/airflow" db migrate >"$WORK/db-migrate.log" 2>&1
"$WORK/venv/bin/airflow" dags test nightly_batch >"$WORK/dags-test.log" 2>&1
if ! grep -q "state=success" "$WORK/dags-test.log"; then
    echo "The DAG run did not succeed." >&2
    exit 1
fi
MANIFEST="$(find "$WORK/out" -name _manifest.json | head -n 1)"
[[ -n "$MANIFEST" ]] || { echo "The run succeeded but no _manifest.json landed under $WORK/out." >&2; exit 1; }
grep -h "^Batch .* ended at" "$WORK/dags-test.log" | sed 's/^/    /' || true
echo "==> wheel-check passed"

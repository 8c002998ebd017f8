#!/usr/bin/env bash
# Production-shaped end-to-end run (make e2e-cluster): PostgreSQL + Redis + CeleryExecutor,
# api-server, scheduler, dag-processor, two triggerers and two Celery workers, results in an
# S3 API server; the deployment scenarios, chaos and load (see docs/deployment.md).
#
# Needs the PostgreSQL server binaries and Debian's redis-server: when they are missing this
# script installs them with apt-get (as root) and says so. initdb refuses to run as root, so
# the database server runs as the unprivileged user anthropix-pg (created when missing).
# Everything it starts is stopped on every exit path: by the Python harness, and by this
# trap (each recorded pid leads its own process group) if the harness itself dies.
#
#   scripts/e2e_cluster.sh                   # everything (~11 min on 2 cores)
#   scripts/e2e_cluster.sh --no-chaos        # the deployment and load scenarios only
#   scripts/e2e_cluster.sh --only NAME       # one scenario (see --list)
#   E2E_KEEP=1 scripts/e2e_cluster.sh        # keep the run directory (logs, database)
set -euo pipefail
cd "$(dirname "$0")/.."
E2E_T0=$(date +%s) # the closing line counts the installs too

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "e2e-cluster: $* missing and not root: install it (apt-get install $*)" >&2
        exit 1
    fi
    echo "e2e-cluster: installing $* with apt-get (not on this machine yet)" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
    fi
}

if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    apt_install postgresql
fi
if ! command -v redis-server >/dev/null && [ ! -x /usr/bin/redis-server ]; then
    apt_install redis-server
fi
# Debian's packages start their own system services on install; this test uses neither.
if [ "$(id -u)" = 0 ] && ! id anthropix-pg >/dev/null 2>&1; then
    echo "e2e-cluster: creating the unprivileged user anthropix-pg to run PostgreSQL (initdb refuses root)" >&2
    useradd --system --no-create-home --shell /usr/sbin/nologin anthropix-pg
fi

. scripts/e2e_lib.sh
e2e_run e2e-cluster tests/e2e_cluster/run.py 1500 60 "$@"

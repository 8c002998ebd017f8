#!/usr/bin/env bash
# Browser test of the Batches page (see tests/e2e_ui/run.py): emulator + api-server with the
# plugin and simple-auth-manager users + headless Chromium (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python tests/e2e_ui/run.py "$@"

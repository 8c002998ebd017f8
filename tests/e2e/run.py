"""Entry point of ``make e2e`` / ``make chaos``: run scenarios against a real Airflow deployment.

Usage (normally through ``scripts/e2e.sh``, which adds a shell ``trap`` as a second safety net)::

    .venv/bin/python tests/e2e/run.py --run-dir DIR [--chaos] [--only NAME[,NAME]] [--list]

Each scenario triggers a DAG run through the REST API and checks what a user would check:
the run's state, the results manifest against the files, the emulator's count of batches
(never paid twice) and a scan for the API key. Prints a summary and writes
``<run_dir>/summary.json``; exits non-zero on the first failed check, after printing the
logs of the processes involved. The loop is ``tests/e2e/harness.py``'s, which the cluster run
(``tests/e2e_cluster/run.py``) extends.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Harness

if __name__ == "__main__":
    sys.exit(Harness(__doc__).main())

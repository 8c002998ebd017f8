"""The emulator as a separate process for the benchmarks, so it never competes with the side measured.

Every benchmark starts it the same way: the CLI on a free port, waiting for its one
"listening on" line, optionally pinned to one CPU.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Callable

READY_PREFIX = "Anthropix emulator listening on "


def pin_to_cpu(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning the child to ``cpu`` when the machine has more than one to spare."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    available = os.sched_getaffinity(0)
    if cpu not in available or len(available) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def start_emulator(api_key: str, *options: str, cpu: int | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m airflow_provider_anthropix.emulator --port 0`` with ``options``; return it and its URL."""
    argv = [sys.executable, "-m", "airflow_provider_anthropix.emulator", "--port", "0", "--api-key", api_key]
    proc = subprocess.Popen([*argv, *options], stdout=subprocess.PIPE, text=True, preexec_fn=pin_to_cpu(cpu))
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith(READY_PREFIX):
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()

"""Handing back memory: what Arrow's pool and glibc's heap keep after their objects are dropped leaves the process.

Each case runs in a fresh process (RSS is a process's figure): ~100 MB is allocated, dropped
(RSS stays: the allocators keep it), then handed back (RSS falls to where it started).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_anthropix.table.memory import _malloc_trim, hand_back_memory

PROBE = """
import ctypes, sys
from airflow_provider_anthropix.table.memory import hand_back_memory

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) >> 10

if sys.argv[1] == "arrow":
    import pyarrow as pa

    start = rss()
    held = [pa.allocate_buffer(256 << 10) for _ in range(400)]  # 100 MB from Arrow's pool
    for buffer in held:
        ctypes.memset(buffer.address, 1, buffer.size)
else:
    start = rss()
    held = [bytes(2000) + bytes([i % 256]) for i in range(50_000)]  # 100 MB from malloc's heap
    top = bytes(2000) + b"x"  # allocated after them: the heap's top cannot shrink by itself
held_mb = rss() - start
del held
dropped_mb = rss() - start
hand_back_memory()
print(held_mb, dropped_mb, rss() - start, "pyarrow" in sys.modules)
"""

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists() or _malloc_trim() is None, reason="RSS and malloc_trim: Linux with glibc"
)


def _run(kind: str) -> tuple[int, int, int, bool]:
    done = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True, timeout=240, check=True)
    held, dropped, after, pyarrow = done.stdout.split()
    return int(held), int(dropped), int(after), pyarrow == "True"


@pytest.mark.parametrize("kind", ["arrow", "heap"])
def test_dropped_memory_leaves_the_process_once_handed_back(kind: str) -> None:
    held, dropped, after, _ = _run(kind)
    assert held > 80
    assert dropped > 80  # dropped, but still the process's: what the task would carry into its next step
    assert after < 20


def test_a_task_without_pyarrow_does_not_load_it() -> None:
    assert _run("heap")[3] is False


def test_it_is_safe_to_call_at_any_time() -> None:
    hand_back_memory()
    hand_back_memory()

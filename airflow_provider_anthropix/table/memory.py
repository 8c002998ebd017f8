"""Handing memory the task no longer uses back to the system, between the steps of a table job.

Freed memory does not leave the process by itself: Arrow's allocator (mimalloc in pyarrow's
wheels) keeps the pages a read has used for the next read, and glibc's ``malloc`` keeps the
top of its heaps. Reading and rendering a million rows leaves tens of MB so kept; the job's
split that follows, and a deferral that ``airflow dags test`` continues in the same process,
would start from there. A task calls :func:`hand_back_memory` once a step's objects are
dropped. It frees nothing that is still referenced, so it cannot change what the task does.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


def hand_back_memory() -> None:
    """Return the pages Arrow's pool and glibc's heap keep unused (a no-op where neither applies)."""
    pyarrow = sys.modules.get("pyarrow")  # a task that never loaded pyarrow has nothing in its pool
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim`` where it is glibc; None elsewhere (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols; glibc only: musl has no malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]

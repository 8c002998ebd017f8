"""A failed all-or-nothing write on an object store commits nothing, even on stores whose ``discard`` is a no-op.

fsspec commits an object when its file closes, and a file still open when it is collected is
closed by ``__del__``. The base class's ``discard`` drops nothing, so an abandoned handle that
is merely left open would commit the partial object at the next garbage collection, and a
close-then-delete would commit it and then delete the last good journal.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from airflow_provider_anthropix.io.job_files import JobFiles

COMMITTED: dict[str, bytes] = {}


class _PlainFile(AbstractBufferedFile):  # type: ignore[misc]
    """An object store file with the base class's no-op ``discard``; commits on the final chunk."""

    def _initiate_upload(self) -> None:
        self._parts: list[bytes] = []

    def _upload_chunk(self, final: bool = False) -> bool:
        self._parts.append(self.buffer.getvalue())
        if final:
            COMMITTED[self.path] = b"".join(self._parts)
        return True


class _PlainStore(AbstractFileSystem):  # type: ignore[misc]
    protocol = "plainstore"

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> _PlainFile:
        return _PlainFile(self, path, mode, **kwargs)

    def rm(self, path: Any, recursive: bool = False, maxdepth: Any = None) -> None:
        for name in [path] if isinstance(path, str) else path:
            COMMITTED.pop(name, None)


def _files() -> JobFiles:
    files = object.__new__(JobFiles)
    files.fs = _PlainStore()
    files.protocol = "s3"  # treated as an object store: no write-aside-and-rename
    files.base = "bucket/job"
    files._folders_made = set()
    return files


def test_a_failed_replace_commits_nothing_and_keeps_the_old_object() -> None:
    COMMITTED.clear()
    files = _files()
    with files.open_replacing("job.json") as handle:
        handle.write(b'{"good": true}')
    assert COMMITTED == {"bucket/job/job.json": b'{"good": true}'}

    def die_mid_write() -> None:
        with files.open_replacing("job.json") as handle:
            handle.write(b'{"half')
            raise RuntimeError("the worker dies mid-write")

    with pytest.raises(RuntimeError):
        die_mid_write()
    gc.collect()  # a handle left open would be closed, and committed, here
    assert COMMITTED == {"bucket/job/job.json": b'{"good": true}'}

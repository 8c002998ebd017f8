"""All-or-nothing publication of a set of objects under a destination folder.

The protocol, which works on any fsspec store behind ``ObjectStoragePath`` (``file://``,
``s3://``, ``gs://``, ...):

1. Everything is written under ``<destination>/_tmp_<token>/`` (names starting with ``_``
   are ignored by Spark, Hive, DuckDB globs and friends). Nothing is written to a local
   disk: the next task may run on another machine.
2. When every object is complete and checked, an existing ``_manifest.json`` is deleted
   first (from here on the folder reads as incomplete), the staged objects are moved to
   their final names (a rename on file systems; copy + delete on object stores), objects
   listed by the previous manifest but not produced now are deleted, and the new
   ``_manifest.json`` is written **last** (staged and moved, so on a file system a reader
   never sees half of it).
3. Any failure before that (or a kill) removes the staging folder. If the process dies
   without cleaning up, what is left has no manifest: readers must treat a folder
   without ``_manifest.json`` as incomplete. Leftover staging folders are removed by the
   next export to the same destination.

One writer per destination at a time: two exports to the same folder would replace
each other's objects.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.io.sink import HashingSink

MANIFEST_NAME = "_manifest.json"
STAGING_PREFIX = "_tmp_"
#: Part size for uploads to object stores: bounds memory per open object (s3fs defaults to 50 MB).
UPLOAD_BLOCK_BYTES = 8 << 20
#: Stores where a "folder" is only a key prefix: creating one would create a bucket, so we do not.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2"})

log = logging.getLogger(__name__)


class DestinationError(Exception):
    """The destination cannot be written (unknown scheme, missing bucket, no permission)."""


def _protocol(path: ObjectStoragePath) -> str:
    protocol = path.protocol
    if isinstance(protocol, (tuple, list)):
        protocol = protocol[0]
    return str(protocol or "file")


def destination_uri(path: ObjectStoragePath) -> str:
    """The destination as a plain URI, without a connection id (for Assets, logs, XCom)."""
    protocol = _protocol(path)
    if protocol in ("file", "local"):
        return "file://" + str(path.path)
    return f"{protocol}://{path.path}"


def check_protocol(path: ObjectStoragePath) -> None:
    """Fail early, naming the fix, when no filesystem is registered for the destination's scheme."""
    from airflow.sdk.io import has_fs

    protocol = _protocol(path)
    if not has_fs(protocol):
        hint = " (pip install 'apache-airflow-providers-amazon[s3fs]')" if protocol.startswith("s3") else ""
        raise DestinationError(
            f"no filesystem is registered for {protocol}:// destinations; install the Airflow provider "
            f"that brings it{hint} or use file://, s3://, gs://, ..."
        )


def read_manifest(destination: ObjectStoragePath | str, conn_id: str | None = None) -> dict[str, Any] | None:
    """The manifest of a published export, or None when the folder holds no complete export."""
    folder = (
        destination if isinstance(destination, ObjectStoragePath) else ObjectStoragePath(destination, conn_id=conn_id)
    )
    fs = folder.fs
    path = f"{folder.path.rstrip('/')}/{MANIFEST_NAME}"
    try:
        fs.invalidate_cache(path)
        with fs.open(path, "rb") as handle:
            data: dict[str, Any] = json.loads(handle.read())
    except FileNotFoundError:
        return None
    return data


class AtomicPublisher:
    """Stages objects under a destination folder and publishes them all at once (see module docstring)."""

    def __init__(self, destination: ObjectStoragePath, *, token: str | None = None) -> None:
        check_protocol(destination)
        self.destination = destination
        self.fs = destination.fs
        self.protocol = _protocol(destination)
        self.root = destination.path.rstrip("/")
        self.token = token or uuid.uuid4().hex[:12]
        self.staging = f"{self.root}/{STAGING_PREFIX}{self.token}"
        self._staged: list[str] = []
        self._prepared = False

    @property
    def uri(self) -> str:
        return destination_uri(self.destination)

    def final_uri(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}"

    # -- before downloading ----------------------------------------------------------------

    def prepare(self, marker: dict[str, Any] | None = None) -> None:
        """Create the staging folder and prove we may write there, before any byte is downloaded."""
        try:
            if self.protocol not in OBJECT_STORE_PROTOCOLS:
                self.fs.makedirs(self.staging, exist_ok=True)
            with self._open_raw(f"{self.staging}/_started.json") as handle:
                handle.write(json.dumps(marker or {}, default=str).encode())
        except DestinationError:
            raise
        except Exception as exc:
            raise DestinationError(
                f"cannot write to {self.uri}: {type(exc).__name__}: {_short(exc)}. Check that the "
                "bucket/folder exists and that the connection may write there."
            ) from None
        self._prepared = True
        self._remove_stale_staging()

    def _remove_stale_staging(self) -> None:
        try:
            self.fs.invalidate_cache(self.root)
            entries = self.fs.ls(self.root, detail=False)
        except Exception:
            return
        for entry in entries:
            name = str(entry).rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(STAGING_PREFIX) and name != f"{STAGING_PREFIX}{self.token}":
                log.info("Removing staging folder left by an earlier, interrupted export: %s", name)
                self._rm(f"{self.root}/{name}")

    # -- writing -------------------------------------------------------------------------------

    def _open_raw(self, path: str) -> IO[bytes]:
        if self.protocol in OBJECT_STORE_PROTOCOLS:
            handle: IO[bytes] = self.fs.open(path, "wb", block_size=UPLOAD_BLOCK_BYTES)
        else:
            handle = self.fs.open(path, "wb")
        return handle

    def open(self, name: str) -> HashingSink:
        """A new staged object ``name`` (a plain file name, no folders)."""
        if not self._prepared:
            raise RuntimeError("call prepare() before open()")
        if "/" in name or name.startswith(("_", ".")):
            raise ValueError(f"not a plain object name: {name!r}")
        self._staged.append(name)
        return HashingSink(self._open_raw(f"{self.staging}/{name}"))

    # -- the end -------------------------------------------------------------------------------

    def commit(self, names: Iterable[str], manifest: dict[str, Any]) -> str:
        """Publish the staged ``names`` and then the manifest; returns the manifest's URI."""
        names = list(names)
        previous = read_manifest(self.destination)
        final_manifest = f"{self.root}/{MANIFEST_NAME}"
        if previous is not None:
            self.fs.rm(final_manifest)
        for name in names:
            self.fs.mv(f"{self.staging}/{name}", f"{self.root}/{name}")
        if previous is not None:
            for entry in previous.get("files", []):
                old = entry.get("name") if isinstance(entry, dict) else None
                if isinstance(old, str) and old not in names and "/" not in old and not old.startswith("_"):
                    self._rm(f"{self.root}/{old}")
        staged_manifest = f"{self.staging}/{MANIFEST_NAME}"
        with self._open_raw(staged_manifest) as handle:
            handle.write(json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n")
        self.fs.mv(staged_manifest, final_manifest)
        self._rm(self.staging)
        self.fs.invalidate_cache(self.root)
        return self.final_uri(MANIFEST_NAME)

    def abort(self) -> None:
        """Remove everything staged; never raises (the original error is what matters)."""
        self._rm(self.staging)

    def _rm(self, path: str) -> None:
        try:
            self.fs.invalidate_cache(path)
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except Exception as exc:
            log.warning("Could not remove %s: %s", path, type(exc).__name__)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."

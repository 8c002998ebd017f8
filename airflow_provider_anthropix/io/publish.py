"""All-or-nothing publication of a set of objects under a destination folder.

The protocol, which works on any fsspec store behind ``ObjectStoragePath`` (``file://``,
``s3://``, ``gs://``, ...):

1. Everything is written under ``<destination>/_tmp_<token>/`` (names starting with ``_``
   are ignored by Spark, Hive, DuckDB globs and friends). Nothing is written to a local
   disk: the next task may run on another machine.
2. When every object is complete and checked, an existing ``_manifest.json`` is deleted
   first (from here on the folder reads as incomplete), the staged objects are moved to
   their final names (a rename on file systems; copy + delete on object stores), the
   writer's other known names that this export did not produce are deleted, and the new
   ``_manifest.json`` is written **last** (staged and moved, so on a file system a reader
   never sees half of it).
3. Any failure before that (or a kill) removes the staging folder. If the process dies
   without cleaning up, what is left has no manifest: readers must treat a folder
   without ``_manifest.json`` as incomplete. Leftover staging folders are removed by the
   next export to the same destination.

What may be deleted (the export deletion rule): only objects whose names the writer can
itself produce (``remove=`` of :meth:`AtomicPublisher.commit`: plain names, checked), directly
inside the destination, one file at a time and never recursively, and only when they are
files. A previous ``_manifest.json`` is untrusted input: it may have been copied, edited or
planted, so its file list decides nothing. The only recursive removal is of a staging folder
whose name has the exact shape this module gives them (``_tmp_`` + 12 hex digits).

One writer per destination at a time: two exports to the same folder would replace
each other's objects.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterable
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.io.sink import HashingSink

MANIFEST_NAME = "_manifest.json"
STAGING_PREFIX = "_tmp_"
#: A staging token: what :class:`AtomicPublisher` draws (12 hex digits), and nothing else.
_TOKEN = re.compile(r"[0-9a-f]{12}")
#: A name :meth:`AtomicPublisher.commit` may remove: one path segment, no tricks.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Part size for uploads to object stores: bounds memory per open object (s3fs defaults to 50 MB).
UPLOAD_BLOCK_BYTES = 8 << 20
#: Stores where a "folder" is only a key prefix: creating one would create a bucket, so we do not.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2"})

log = logging.getLogger(__name__)


class DestinationError(AnthropixError):
    """The destination cannot be written (unknown scheme, missing bucket, no permission)."""


def protocol_of(path: ObjectStoragePath) -> str:
    protocol = path.protocol
    if isinstance(protocol, (tuple, list)):
        protocol = protocol[0]
    return str(protocol or "file")


def destination_uri(path: ObjectStoragePath) -> str:
    """The destination as a plain URI, without a connection id (for Assets, logs, XCom)."""
    protocol = protocol_of(path)
    if protocol in ("file", "local"):
        return "file://" + str(path.path)
    return f"{protocol}://{path.path}"


#: The Airflow provider package that registers a filesystem for each common scheme.
FILESYSTEM_PACKAGES: dict[str, str] = {
    "s3": "apache-airflow-providers-amazon[s3fs]",
    "s3a": "apache-airflow-providers-amazon[s3fs]",
    "s3n": "apache-airflow-providers-amazon[s3fs]",
    "gs": "apache-airflow-providers-google",
    "gcs": "apache-airflow-providers-google",
    "abfs": "apache-airflow-providers-microsoft-azure",
    "abfss": "apache-airflow-providers-microsoft-azure",
    "adl": "apache-airflow-providers-microsoft-azure",
    "az": "apache-airflow-providers-microsoft-azure",
    "oss": "apache-airflow-providers-alibaba",
}
#: Name of the small object :func:`check_destination_writable` writes and deletes again.
PROBE_PREFIX = "_anthropix_probe_"


def check_protocol(path: ObjectStoragePath) -> None:
    """Fail early, naming the package to install, when no filesystem is registered for the scheme."""
    protocol = protocol_of(path)
    if protocol in ("file", "local"):
        # Always registered; asking has_fs would make Airflow discover every installed
        # filesystem (~0.3 s on the first call of a process) for nothing.
        return
    from airflow.sdk.io import has_fs

    if not has_fs(protocol):
        package = FILESYSTEM_PACKAGES.get(protocol)
        fix = (
            f"pip install '{package}' on every worker"
            if package
            else "install the Airflow provider package that registers a filesystem for it"
        )
        raise DestinationError(
            f"no filesystem is registered for {protocol}:// destinations; {fix}, or use another scheme "
            "(file:// needs nothing; s3:// needs apache-airflow-providers-amazon[s3fs], gs:// "
            "apache-airflow-providers-google, abfs:// apache-airflow-providers-microsoft-azure)"
        )


def resolve_destination(
    value: str | ObjectStoragePath, conn_id: str | None = None, what: str = "destination"
) -> ObjectStoragePath:
    """A path argument (URI, absolute path or ``ObjectStoragePath``) as a path whose scheme has a filesystem.

    Every operator resolves its inputs and outputs here, so a relative path is refused the same
    way everywhere. Raises :class:`DestinationError` naming ``what``, the value and the fix;
    nothing is touched.
    """
    try:
        if isinstance(value, ObjectStoragePath):
            path = ObjectStoragePath(value, conn_id=conn_id) if conn_id else value
        else:
            text = str(value).strip()
            if not text:
                raise ValueError(f"{what} is empty")
            if "://" not in text and not text.startswith("/"):
                raise ValueError("a relative path depends on the worker's directory; use an absolute path or a URI")
            path = ObjectStoragePath(text, conn_id=conn_id)
        check_protocol(path)
    except (ValueError, DestinationError) as exc:
        raise DestinationError(f"unusable {what} {value!s}: {exc}") from None
    return path


def check_destination_writable(path: ObjectStoragePath) -> None:
    """Prove the destination can take an export: its scheme has a filesystem, and we may write and delete there.

    Writes a tiny ``_anthropix_probe_<token>`` object directly under the folder and deletes it
    again. On object stores no bucket or folder is created (a missing bucket fails here, which
    is the point); on file systems the folder is created, as the export would. Raises
    :class:`DestinationError` naming the URI and what to check.
    """
    check_protocol(path)
    fs = path.fs
    protocol = protocol_of(path)
    root = path.path.rstrip("/")
    probe = f"{root}/{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
    uri = destination_uri(path)
    try:
        if protocol not in OBJECT_STORE_PROTOCOLS:
            fs.makedirs(root, exist_ok=True)
        with fs.open(probe, "wb") as handle:
            handle.write(b"{}")
        fs.rm_file(probe)
    except Exception as exc:
        raise DestinationError(
            f"cannot write to {uri}: {type(exc).__name__}: {_short(exc)}. Check that the bucket/folder exists "
            "and that the connection may write and delete objects there."
        ) from None


def is_staging_name(name: str) -> bool:
    """True only for a folder name this module makes for staging: ``_tmp_`` and 12 hex digits."""
    return name.startswith(STAGING_PREFIX) and _TOKEN.fullmatch(name[len(STAGING_PREFIX) :]) is not None


def is_plain_name(name: str) -> bool:
    """A single object name: letters, digits, ``.``, ``_``, ``-``; not ``.``/``..``, no separator."""
    return bool(_PLAIN_NAME.fullmatch(name)) and ".." not in name


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
        if token is not None and not _TOKEN.fullmatch(token):
            raise ValueError(f"a staging token is 12 lowercase hex digits; got {token!r}")
        self.destination = destination
        self.fs = destination.fs
        self.protocol = protocol_of(destination)
        self.root = destination.path.rstrip("/")
        self.token = token or uuid.uuid4().hex[:12]
        self.staging = f"{self.root}/{STAGING_PREFIX}{self.token}"
        self._staged: list[str] = []
        self._prepared = False

    @property
    def uri(self) -> str:
        return destination_uri(self.destination)

    @property
    def staging_uri(self) -> str:
        """The staging folder as a full URI (for logs: ``s3://bucket/out/_tmp_...``)."""
        return self._uri(self.staging)

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
            if is_staging_name(name) and name != f"{STAGING_PREFIX}{self.token}":
                log.info(
                    "Removing staging folder left by an earlier, interrupted export: %s",
                    self._uri(f"{self.root}/{name}"),
                )
                self._rm_tree(f"{self.root}/{name}")

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

    def commit(self, names: Iterable[str], manifest: dict[str, Any], *, remove: Iterable[str] = ()) -> str:
        """Publish the staged ``names`` and then the manifest; returns the manifest's URI.

        ``remove``: the other names this writer can produce (e.g. ``results.jsonl.gz`` when
        this export wrote ``results.jsonl``). Those not published now are deleted if they are
        files directly inside the destination, so the folder holds one export, not a mix.
        Nothing else is ever deleted: not what a previous manifest lists, not folders.
        """
        names = list(names)
        stale = sorted(set(remove) - set(names))
        for name in [*names, *stale]:
            if not is_plain_name(name):
                raise ValueError(f"not a plain object name: {name!r}")
        final_manifest = f"{self.root}/{MANIFEST_NAME}"
        for name in [*names, MANIFEST_NAME]:
            target = f"{self.root}/{name}"
            self.fs.invalidate_cache(target)
            if self.fs.isdir(target):
                raise DestinationError(
                    f"{self._uri(target)} is a folder, so the export cannot publish its {name} there; "
                    "move that folder away or choose another destination"
                )
        self._rm_file(final_manifest)
        for name in names:
            self.fs.mv(f"{self.staging}/{name}", f"{self.root}/{name}")
        for name in stale:
            self._rm_file(f"{self.root}/{name}")
        staged_manifest = f"{self.staging}/{MANIFEST_NAME}"
        with self._open_raw(staged_manifest) as handle:
            handle.write(json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n")
        self.fs.mv(staged_manifest, final_manifest)
        self._rm_tree(self.staging)
        self.fs.invalidate_cache(self.root)
        return self.final_uri(MANIFEST_NAME)

    def abort(self) -> None:
        """Remove everything staged; never raises (the original error is what matters)."""
        self._rm_tree(self.staging)

    def _uri(self, path: str) -> str:
        """A path of this store as a full URI, for logs (``s3://bucket/x``, not ``bucket/x``)."""
        relative = path[len(self.root) :] if path.startswith(self.root) else "/" + path.lstrip("/")
        return self.uri.rstrip("/") + relative

    def _rm_file(self, path: str) -> None:
        """Delete ``path`` if it is a file; a folder (or anything else) there is left alone."""
        self.fs.invalidate_cache(path)
        if self.fs.isfile(path):
            self.fs.rm_file(path)
        elif self.fs.isdir(path):
            log.warning("Leaving %s alone: it is a folder, and an export only removes its own files", self._uri(path))

    def _rm_tree(self, path: str) -> None:
        """Delete one of our staging folders with its content; never raises, never anything else."""
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if path.rsplit("/", 1)[0] != self.root or not is_staging_name(name):
            raise ValueError(f"refusing to remove {path!r} recursively: not a staging folder of this export")
        try:
            self.fs.invalidate_cache(path)
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except Exception as exc:
            log.warning("Could not remove %s: %s", self._uri(path), type(exc).__name__)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."

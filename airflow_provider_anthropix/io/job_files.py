"""A batch job's working prefix in object storage: its journal, shard files, resent-id lists and results copies.

Nothing of a job lives on a worker's disk: after a deferral the task may resume on another
machine, so everything it needs next is written under ``work_prefix`` (``file://``, ``s3://``,
...). The journal (``job.json``) is small and rewritten whole at every step; on object stores
one PUT replaces it at once, on file systems it is written aside and renamed. The results a
round's end reads (to find what to send again) are kept as they stream past, written the same
all-or-nothing way, and the export reads them back instead of downloading them again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api.models import EncodedBody, RequestCounts
from airflow_provider_anthropix.io.export import ExportOptions, export_results
from airflow_provider_anthropix.io.publish import (
    OBJECT_STORE_PROTOCOLS,
    UPLOAD_BLOCK_BYTES,
    destination_uri,
    protocol_of,
)
from airflow_provider_anthropix.io.shards import (
    ENVELOPE_BYTES,
    RetryScan,
    Shard,
    ShardWriter,
    describe_inputs,
    fingerprint_inputs,
    iter_input_requests,
    merged_results,
    resolve_inputs,
    scan_for_retries,
    select_requests,
    shard_body,
    split_requests,
)

JOURNAL_NAME = "job.json"
_READ_CHUNK = 1 << 20


class JobFiles:
    """Reads and writes the files of one job under its working prefix.

    :param root: the working prefix (a folder URI as ``ObjectStoragePath``).
    """

    def __init__(self, root: ObjectStoragePath) -> None:
        self.root = root
        self.fs = root.fs
        self.protocol = protocol_of(root)
        self.base = str(root.path).rstrip("/")
        self._folders_made: set[str] = set()

    @property
    def uri(self) -> str:
        return destination_uri(self.root).rstrip("/")

    def _full(self, name: str) -> str:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"not a name inside the job's folder: {name!r}")
        return f"{self.base}/{name}"

    def _ensure_folder(self, full: str) -> None:
        if self.protocol in OBJECT_STORE_PROTOCOLS:
            return
        folder = full.rsplit("/", 1)[0]
        if folder not in self._folders_made:
            self.fs.makedirs(folder, exist_ok=True)
            self._folders_made.add(folder)

    def open_write(self, name: str) -> IO[bytes]:
        full = self._full(name)
        self._ensure_folder(full)
        if self.protocol in OBJECT_STORE_PROTOCOLS:
            handle: IO[bytes] = self.fs.open(full, "wb", block_size=UPLOAD_BLOCK_BYTES)
        else:
            handle = self.fs.open(full, "wb")
        return handle

    def open_read(self, name: str) -> IO[bytes]:
        handle: IO[bytes] = self.fs.open(self._full(name), "rb", block_size=UPLOAD_BLOCK_BYTES)
        return handle

    def size(self, name: str) -> int | None:
        full = self._full(name)
        try:
            self.fs.invalidate_cache(full)
            return int(self.fs.size(full))
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def open_replacing(self, name: str) -> Iterator[IO[bytes]]:
        """Write ``name`` all or nothing: it appears (or replaces the old one) only when the block ends without error.

        On object stores the object is committed when the handle closes, so a failed write
        is discarded instead; on file systems it is written aside and renamed.
        """
        if self.protocol in OBJECT_STORE_PROTOCOLS:
            handle = self.open_write(name)
            try:
                yield handle
            except BaseException:
                _abandon(handle)
                raise
            handle.close()
            return
        aside = f"{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with self.open_write(aside) as handle:
                yield handle
            self.fs.mv(self._full(aside), self._full(name))
        except BaseException:
            with contextlib.suppress(Exception):
                self.remove([aside])
            raise

    def iter_file(self, name: str) -> Iterator[bytes]:
        """The bytes of ``name``, a megabyte at a time."""
        with self.open_read(name) as handle:
            while chunk := handle.read(_READ_CHUNK):
                yield chunk

    def remove(self, names: Collection[str]) -> None:
        """Remove the named files (never folders, never recursively): only what the job wrote."""
        for name in names:
            full = self._full(name)
            try:
                if self.fs.isfile(full):
                    self.fs.rm_file(full)
            except FileNotFoundError:
                continue

    # -- the journal ----------------------------------------------------------------------------

    def load_journal(self) -> dict[str, Any] | None:
        full = self._full(JOURNAL_NAME)
        try:
            self.fs.invalidate_cache(full)
            with self.fs.open(full, "rb") as handle:
                data = json.loads(handle.read())
        except FileNotFoundError:
            return None
        if not isinstance(data, dict):
            raise ValueError(f"{self.uri}/{JOURNAL_NAME} is not a job journal")
        return data

    def save_journal(self, data: dict[str, Any]) -> None:
        payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        with self.open_replacing(JOURNAL_NAME) as handle:
            handle.write(payload)

    # -- id lists -------------------------------------------------------------------------------

    def write_ids(self, name: str, ids: Collection[str]) -> None:
        with self.open_write(name) as handle:
            handle.write("".join(f"{custom_id}\n" for custom_id in sorted(ids)).encode())

    def read_ids(self, name: str) -> set[str]:
        with self.open_read(name) as handle:
            return {line.strip() for line in handle.read().decode().splitlines() if line.strip()}


class JobWorkspace(JobFiles):
    """The :class:`~airflow_provider_anthropix.workflow.job.JobStorage` of a job: its files plus its input and output.

    :param root: the working prefix.
    :param requests_path: the input (a file, a folder or a glob).
    :param destination: where the merged results are published.
    :param api_version: validation rules of the connection's API version.
    :param default_params: merged under every request's params.
    :param max_requests_per_batch: most requests in one shard.
    :param max_bytes_per_batch: largest create body of one shard.
    :param export_options: format, compression, prices (as the fetch operator).
    :param should_stop: polled by the export; True stops it with nothing published.
    """

    def __init__(
        self,
        root: ObjectStoragePath,
        *,
        requests_path: ObjectStoragePath,
        destination: ObjectStoragePath,
        api_version: str,
        default_params: Mapping[str, Any] | None,
        max_requests_per_batch: int,
        max_bytes_per_batch: int,
        export_options: ExportOptions,
        max_problems_shown: int = 10,
        logger: logging.Logger | Any = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(root)
        self.requests_path = requests_path
        self.destination = destination
        self.api_version = api_version
        self.default_params = default_params
        self.max_requests_per_batch = max_requests_per_batch
        self.max_bytes_per_batch = max_bytes_per_batch
        self.export_options = export_options
        self.max_problems_shown = max_problems_shown
        self.log = logger or logging.getLogger(__name__)
        self.should_stop = should_stop
        self._inputs: list[ObjectStoragePath] | None = None

    def _writer(self, round_index: int) -> ShardWriter:
        return ShardWriter(
            self.open_write,
            prefix=f"round-{round_index}",
            max_requests=self.max_requests_per_batch,
            max_body_bytes=self.max_bytes_per_batch,
        )

    def inputs(self) -> list[ObjectStoragePath]:
        if self._inputs is None:
            self._inputs = resolve_inputs(self.requests_path)
        return self._inputs

    def fingerprint(self) -> list[dict[str, Any]]:
        return fingerprint_inputs(self.inputs())

    def split(self) -> list[dict[str, Any]]:
        files = self.inputs()
        started = time.monotonic()

        def progress(seen: int, written: int) -> None:
            self.log.info(
                "Validated %s requests (%.0f MB of shards written, %.0f s)",
                f"{seen:,}",
                written / 1e6,
                time.monotonic() - started,
            )

        writer = self._writer(0)
        try:
            shards = split_requests(
                iter_input_requests(files),
                writer,
                api_version=self.api_version,
                default_params=self.default_params,
                max_problems_shown=self.max_problems_shown,
                progress=progress,
                source=describe_inputs(files),
            )
        except BaseException:
            self.remove(writer.abandon())  # a refused input leaves no shard behind
            raise
        return [shard.to_dict() for shard in shards]

    def body(self, shard: Any) -> EncodedBody:
        expected = int(shard.body_bytes) - ENVELOPE_BYTES
        found = self.size(shard.name)
        if found != expected:
            raise ValueError(
                f"shard file {self.uri}/{shard.name} is {'missing' if found is None else f'{found:,} bytes'}, "
                f"the plan says {expected:,}: the job's working folder was changed; start the job afresh"
            )
        return shard_body(lambda: self.open_read(shard.name), Shard(shard.name, shard.requests, shard.body_bytes))

    def select(self, round_index: int, shards: list[Any], ids: Collection[str]) -> list[dict[str, Any]]:
        openers = [lambda name=shard.name: self.open_read(name) for shard in shards]
        return [shard.to_dict() for shard in select_requests(openers, ids, self._writer(round_index))]

    def scan_for_retries(
        self, batch_id: str, chunks: Iterable[bytes], *, retry_error_types: Collection[str], retry_expired: bool
    ) -> RetryScan:
        """Scan one batch's results for the retry round, keeping a copy of them for the export."""
        name = f"results/{batch_id}.jsonl"
        size = 0
        with self.open_replacing(name) as handle:

            def kept() -> Iterator[bytes]:
                nonlocal size
                for chunk in chunks:
                    handle.write(chunk)
                    size += len(chunk)
                    yield chunk

            scan = scan_for_retries(kept(), retry_error_types=retry_error_types, retry_expired=retry_expired)
        scan.copy, scan.copy_bytes = name, size
        return scan

    def export(
        self,
        sources: list[Any],
        chunks_of: Callable[[str], Iterable[bytes]],
        expected: RequestCounts,
        manifest_extra: dict[str, Any],
    ) -> dict[str, Any]:
        def streams() -> Iterator[tuple[Iterable[bytes], Collection[str]]]:
            for source in sources:
                # The round end's copy, unless it is gone or not the size it was written at.
                copy = source.copy if source.copy and self.size(source.copy) == source.copy_bytes else None
                yield (self.iter_file(copy) if copy else chunks_of(source.batch_id)), source.drop

        label = f"job of {len(sources)} batch(es)"
        result = export_results(
            merged_results(streams()),
            self.destination,
            batch_id=label,
            expected=expected,
            options=self.export_options,
            should_stop=self.should_stop,
            logger=self.log,
            manifest_extra=manifest_extra,
        )
        return result.xcom()


def _abandon(handle: IO[bytes]) -> None:
    """Drop an unfinished upload without committing it, now or when the handle is collected.

    fsspec commits an object when its file closes, and ``__del__`` closes a file that is still
    open; some stores' ``discard`` (the base class's) drops nothing. So the handle is discarded
    where the store can, and then marked closed, so that nothing ever commits the partial
    object. Closing and deleting instead would commit the partial object first and, for a
    replaced object (the journal), delete the last good one.
    """
    with contextlib.suppress(Exception):
        discard = getattr(handle, "discard", None)
        if discard is not None:
            discard()
    with contextlib.suppress(Exception):
        handle.closed = True  # type: ignore[misc]

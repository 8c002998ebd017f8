"""A batch job's working prefix in object storage: its journal, shard files, resent-id lists and results copies.

Nothing of a job lives on a worker's disk: after a deferral the task may resume on another
machine, so everything it needs next is written under ``work_prefix`` (``file://``, ``s3://``,
...). The journal (``job.json``) is small and rewritten whole at every step; on object stores
one PUT replaces it at once, on file systems it is written aside and renamed. The results a
round's end reads (to find what to send again) are kept as they stream past, written the same
all-or-nothing way, and the export reads them back instead of downloading them again.

Everything read back from the folder is untrusted (see ``workflow/journal.py``): files are
compared with the digests the journal recorded before they are used, the journal is read
with a size cap, nothing is removed but the names a job writes, and on a local file system a
folder holding a symbolic link is refused before anything is written through it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api.digests import (
    ContentChanged,
    HashingReader,
    checked_ids,
    content_digest,
    hashed_chunks,
    new_content_hash,
)
from airflow_provider_anthropix.api.models import EncodedBody, RequestCounts
from airflow_provider_anthropix.api.plan import PlanOptions
from airflow_provider_anthropix.io.export import ExportOptions, export_results
from airflow_provider_anthropix.io.publish import (
    OBJECT_STORE_PROTOCOLS,
    UPLOAD_BLOCK_BYTES,
    destination_uri,
    protocol_of,
)
from airflow_provider_anthropix.io.shards import (
    ENVELOPE_BYTES,
    ReadFingerprint,
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
#: A journal is a few kilobytes per shard; anything this large is not one.
_MAX_JOURNAL_BYTES = 64 << 20
#: The only names a job writes in its folder, so the only ones it (or a later job) ever removes.
JOB_FILE_NAMES = re.compile(
    r"job\.json|(round-\d{1,6}/)?shard-\d{5}\.jsonl|round-\d{1,6}/(resent_ids|not_sent_ids)\.txt"
    r"|results/[A-Za-z0-9_-]{1,128}\.jsonl|[A-Za-z0-9_./-]+\.[0-9a-f]{8}\.tmp"
)


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

    def check_folder(self) -> None:
        """Refuse a local working folder that holds a symbolic link: the job would write (and delete) through it.

        Object stores have no links. On a file system, a link planted in the folder (``round-0 ->
        /elsewhere``) would send shard files, and their removal, outside the folder.
        """
        if self.protocol in OBJECT_STORE_PROTOCOLS:
            return
        link = _first_link(self.base)
        if link is not None:
            raise ValueError(
                f"the job's working folder holds a symbolic link, {link}; the job writes and removes files only "
                f"inside {self.uri} and does not follow links. Remove the link (or use another work_prefix)"
            )

    def digest_of(self, name: str) -> str | None:
        """The content digest of ``name``, or None when it is missing."""
        try:
            self.fs.invalidate_cache(self._full(name))
            return content_digest(lambda: self.open_read(name))
        except FileNotFoundError:
            return None

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
        """Remove the named files (never folders, never recursively): only names a job writes."""
        for name in names:
            if not JOB_FILE_NAMES.fullmatch(name):
                raise ValueError(f"not a name the job writes, so not one it removes: {name[:80]!r}")
            full = self._full(name)
            try:
                if self.fs.isfile(full):
                    self.fs.rm_file(full)
            except FileNotFoundError:
                continue

    # -- the journal ----------------------------------------------------------------------------

    def load_journal(self) -> Any:
        """The journal as parsed JSON (any JSON value: the caller checks it), or None when there is none.

        :raises ValueError: empty, too large, or not JSON, said in words.
        """
        full = self._full(JOURNAL_NAME)
        try:
            self.fs.invalidate_cache(full)
            with self.fs.open(full, "rb") as handle:
                data = handle.read(_MAX_JOURNAL_BYTES + 1)
        except FileNotFoundError:
            return None
        if not data.strip():
            raise ValueError("the file is empty")
        if len(data) > _MAX_JOURNAL_BYTES:
            raise ValueError(f"the file is larger than {_MAX_JOURNAL_BYTES >> 20} MB")
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"the file is not JSON: {exc}") from None
        except RecursionError:
            raise ValueError("the file nests JSON too deeply") from None

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

    def remove_job(self) -> None:
        """Remove every file of the job the folder holds (a dry run's plan; a superseded job), links never followed."""
        self.remove(_job_files_under(self))
        _remove_empty_folders(self)


class JobWorkspace(JobFiles):
    """The :class:`~airflow_provider_anthropix.workflow.job.JobStorage` of a job: its files plus its input and output.

    :param root: the working prefix.
    :param requests_path: the input (a file, a folder or a glob).
    :param destination: where the merged results are published.
    :param plan: default params, batch limits and API version the shards are cut by.
    :param export_options: format, compression, prices (as the fetch operator).
    :param should_stop: polled by the export; True stops it with nothing published.
    """

    def __init__(
        self,
        root: ObjectStoragePath,
        *,
        requests_path: ObjectStoragePath,
        destination: ObjectStoragePath,
        plan: PlanOptions,
        export_options: ExportOptions,
        max_problems_shown: int = 10,
        logger: logging.Logger | Any = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(root)
        self.requests_path = requests_path
        self.destination = destination
        self.plan = plan
        self.export_options = export_options
        self.max_problems_shown = max_problems_shown
        self.log = logger or logging.getLogger(__name__)
        self.should_stop = should_stop
        self._inputs: list[ObjectStoragePath] | None = None

    def _writer(self, round_index: int) -> ShardWriter:
        return ShardWriter(
            self.open_write,
            prefix=f"round-{round_index}",
            max_requests=self.plan.max_requests_per_batch,
            max_body_bytes=self.plan.max_bytes_per_batch,
        )

    def inputs(self) -> list[ObjectStoragePath]:
        if self._inputs is None:
            self._inputs = resolve_inputs(self.requests_path)
        return self._inputs

    def fingerprint(self, *, content: bool) -> list[dict[str, Any]]:
        return fingerprint_inputs(self.inputs(), content=content)

    def split(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The shards of the input, and the input's fingerprint with the content digests of the bytes split."""
        files = self.inputs()
        started = time.monotonic()
        read = ReadFingerprint(files)  # stamps before the read; contents hashed as the split reads them

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
                iter_input_requests(files, read),
                writer,
                api_version=self.plan.api_version,
                default_params=self.plan.default_params,
                max_problems_shown=self.max_problems_shown,
                progress=progress,
                source=describe_inputs(files),
            )
        except BaseException:
            self.remove(writer.abandon())  # a refused input leaves no shard behind
            raise
        return [shard.to_dict() for shard in shards], read.prints()

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
        """Copy the lines of ``ids`` from ``shards`` into round ``round_index``'s shards.

        Each source is checked against its digest as it is read (no second read): when one
        differs, the new shards are removed and :class:`ContentChanged` names the sources.
        """
        readers: list[tuple[Any, HashingReader]] = []

        def opener(shard: Any) -> Callable[[], IO[bytes]]:
            def open_source() -> IO[bytes]:
                reader = HashingReader(self.open_read(shard.name))
                readers.append((shard, reader))
                return reader  # type: ignore[return-value]

            return open_source

        made = select_requests([opener(shard) for shard in shards], ids, self._writer(round_index))
        changed = [shard.name for shard, reader in readers if reader.hexdigest() != shard.digest]
        if changed:
            self.remove([shard.name for shard in made])
            raise ContentChanged(changed)
        return [shard.to_dict() for shard in made]

    def scan_for_retries(
        self, batch_id: str, chunks: Iterable[bytes], *, retry_error_types: Collection[str], retry_expired: bool
    ) -> RetryScan:
        """Scan one batch's results for the retry round, keeping a copy of them for the export."""
        name = f"results/{batch_id}.jsonl"
        size = 0
        digest = new_content_hash()
        with self.open_replacing(name) as handle:

            def kept() -> Iterator[bytes]:
                nonlocal size
                for chunk in chunks:
                    handle.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    yield chunk

            scan = scan_for_retries(kept(), retry_error_types=retry_error_types, retry_expired=retry_expired)
        scan.copy, scan.copy_bytes, scan.copy_digest = name, size, digest.hexdigest()
        return scan

    def export(
        self,
        sources: list[Any],
        chunks_of: Callable[[str], Iterable[bytes]],
        expected: RequestCounts,
        manifest_extra: dict[str, Any],
    ) -> dict[str, Any]:
        spoiled: set[str] = set()

        def streams() -> Iterator[tuple[Iterable[bytes], Collection[str]]]:
            for source in sources:
                # The round end's copy, checked against its digest as it is read; gone or spoiled: download.
                copy = source.copy if source.copy and source.copy_digest and source.copy not in spoiled else None
                if copy and self.size(copy) is None:
                    copy = None
                chunks: Iterable[bytes] = (
                    hashed_chunks(self.iter_file(copy), source.copy_digest, copy)
                    if copy
                    else chunks_of(source.batch_id)
                )
                # The batch must hold exactly its shard's custom_ids, whichever way its results came.
                yield checked_ids(chunks, source.ids_digest, f"batch {source.batch_id} ({source.shard})"), source.drop

        self._note_replaced_export(manifest_extra)
        try:
            return self._export_once(streams(), sources, expected, manifest_extra)
        except ContentChanged as exc:
            # Nothing was published: export again, downloading what the spoiled copies held.
            self.log.warning(
                "The kept results %s are not the bytes they were written as; downloading them again",
                ", ".join(exc.names),
            )
            spoiled.update(exc.names)
            return self._export_once(streams(), sources, expected, manifest_extra)

    def _export_once(
        self,
        streams: Iterable[tuple[Iterable[bytes], Collection[str]]],
        sources: list[Any],
        expected: RequestCounts,
        manifest_extra: dict[str, Any],
    ) -> dict[str, Any]:
        label = f"job of {len(sources)} batch(es)"
        result = export_results(
            merged_results(streams),
            self.destination,
            batch_id=label,
            expected=expected,
            options=self.export_options,
            should_stop=self.should_stop,
            logger=self.log,
            manifest_extra=manifest_extra,
        )
        return result.xcom()

    def _note_replaced_export(self, manifest_extra: Mapping[str, Any]) -> None:
        """Say so when the destination holds an earlier job's results, which this export replaces."""
        earlier = _read_small_json(self.destination / "_manifest.json")
        job = earlier.get("job") if isinstance(earlier, dict) else None
        ours = manifest_extra.get("job", {})
        if isinstance(job, dict) and (job.get("key"), job.get("fingerprint")) != (
            ours.get("key"),
            ours.get("fingerprint"),
        ):
            planned = str(job.get("planned_at"))[:40]
            self.log.warning(
                "%s holds the results of an earlier job (planned at %s) with another input or options; this job's "
                "results replace them when the export completes",
                destination_uri(self.destination),
                planned,
            )


def sweep_other_jobs(parent: ObjectStoragePath, keep: str, log: logging.Logger | Any) -> None:
    """Remove the working folders beside ``keep`` under ``parent`` whose jobs are over, after a job exported.

    The rule (docs/jobs.md): a folder whose journal says its job exported (its results were
    replaced by this export) or never sent anything (a dry run, a job refused before paying) is
    removed, file by file, only names a job writes; a folder whose job has batches but never
    exported is kept and named, since it may still be running; a folder whose journal cannot be
    read is kept and named. Nothing here can fail the job that calls it.
    """
    try:
        children = [c for c in parent.iterdir() if c.is_dir() and c.name != keep]
    except (OSError, ValueError):
        return
    for child in children:
        files = JobFiles(child)
        try:
            files.check_folder()
            journal = files.load_journal()
        except (OSError, ValueError) as exc:
            log.warning("Kept the job folder %s: its journal cannot be read (%s)", files.uri, str(exc)[:200])
            continue
        try:
            sent, exported = _what_a_journal_says(journal)
        except Exception as exc:  # an orphan must never break the job that looks at it
            log.warning("Kept the job folder %s: its journal is not a job's (%s)", files.uri, str(exc)[:200])
            continue
        if sent and not exported:
            log.warning(
                "Kept the job folder %s: its job sent batch(es) %s and never exported them (it may still be running)",
                files.uri,
                ", ".join(sent[:5]) + (f" and {len(sent) - 5} more" if len(sent) > 5 else ""),
            )
            continue
        try:
            files.remove_job()
        except (OSError, ValueError) as exc:
            log.warning("Could not remove the job folder %s: %s", files.uri, str(exc)[:200])
            continue
        log.info(
            "Removed the working folder of an earlier job (%s): %s",
            "exported" if exported else "sent nothing",
            files.uri,
        )


def _what_a_journal_says(journal: Any) -> tuple[list[str], bool]:
    """The batch ids (or attempts) a journal records and whether its job exported; ``ValueError`` if it is not a job's."""
    if not isinstance(journal, dict) or not isinstance(journal.get("rounds"), list):
        raise ValueError("no rounds")
    sent: list[str] = []
    for round_ in journal["rounds"]:
        shards = round_.get("shards") if isinstance(round_, dict) else None
        if not isinstance(shards, list):
            raise ValueError("a round without shards")
        for shard in shards:
            if isinstance(shard, dict) and (shard.get("batch_id") or shard.get("attempt")):
                sent.append(str(shard.get("batch_id") or "an attempt")[:64])
    exports = journal.get("exports")
    return sent, isinstance(exports, int) and not isinstance(exports, bool) and exports > 0


def _first_link(base: str) -> str | None:
    """The first symbolic link at or under the local folder ``base`` (None: there is none, or no folder yet)."""
    if os.path.islink(base):
        return base
    for folder, dirs, files in os.walk(base, followlinks=False):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                return path
    return None


def _job_files_under(files: JobFiles) -> list[str]:
    """The names under the folder that a job writes (links skipped on file systems)."""
    if files.protocol in OBJECT_STORE_PROTOCOLS:
        try:
            paths = files.fs.find(files.base)
        except FileNotFoundError:
            return []
        relative = [str(p)[len(files.base) + 1 :] for p in paths if str(p).startswith(files.base + "/")]
    else:
        relative = []
        for folder, _dirs, names in os.walk(files.base, followlinks=False):
            for name in names:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    relative.append(os.path.relpath(path, files.base).replace(os.sep, "/"))
    return [name for name in relative if JOB_FILE_NAMES.fullmatch(name)]


def _remove_empty_folders(files: JobFiles) -> None:
    if files.protocol in OBJECT_STORE_PROTOCOLS:
        return  # object stores have no empty folders to leave behind
    for folder, _dirs, _names in sorted(os.walk(files.base, followlinks=False), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            if not os.path.islink(folder):
                os.rmdir(folder)


def _read_small_json(path: ObjectStoragePath, limit: int = 16 << 20) -> Any:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
        return json.loads(data) if len(data) <= limit else None
    except (OSError, ValueError, RecursionError):
        return None


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

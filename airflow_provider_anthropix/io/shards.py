"""Split request files into shards that each fit one batch, and turn a shard back into a create body.

A shard file is JSONL: one encoded request per line, exactly the bytes that go into the
create body (``default_params`` already merged). The body is derived from it on the fly
(``{"requests":[`` + lines joined by commas + ``]}``), so its size is known without reading
it and a retry round can pick requests out of a shard by their ``custom_id`` without
decoding their params. Shard files live in object storage under the job's working prefix:
the task that creates a shard may run on another machine than the one that split it.

The split is deterministic: the same input, options and API version always give the same
shards (input order, cut by request count and by the exact encoded size).
"""

from __future__ import annotations

import contextlib
import glob as globlib
import gzip
import queue
import threading
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import IO, Any

import msgspec
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api import EncodedBody, ValidationProblem
from airflow_provider_anthropix.api.digests import IdSetDigest, content_digest, new_content_hash
from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.limits import MAX_BODY_BYTES, MAX_REQUESTS
from airflow_provider_anthropix.api.lines import BlockSplitter, line_blocks, lines_of
from airflow_provider_anthropix.api.validation import BatchChecker
from airflow_provider_anthropix.io.requests_file import (
    BODY_HEAD,
    BODY_TAIL,
    ProblemLog,
    Undecodable,
    iter_jsonl,
    merge_defaults,
)
from airflow_provider_anthropix.io.result_line import LINE_DECODER

#: Bytes the envelope adds to a shard file's size: head + tail - the last newline.
ENVELOPE_BYTES = len(BODY_HEAD) + len(BODY_TAIL) - 1
REQUEST_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".ndjson", ".ndjson.gz")
#: What the split hands its write-behind thread at a time. Each handoff costs that thread a few
#: GIL reacquisitions of up to the 5 ms switch interval while the split runs Python: at 1 MB it
#: could not keep up (the split waited ~1.5 s of 11), at 4 MB it does.
_WRITE_BUFFER = 4 << 20
_READ_CHUNK = 1 << 20


class InputError(AnthropixError, ValueError):
    """The requests input cannot be found or read (no file, empty folder, a glob with no match)."""


@dataclass(frozen=True)
class Shard:
    """One shard file: its name under the working prefix, request count and the body size it makes.

    ``digest`` is the file's content digest and ``ids_digest`` the digest of its custom_ids
    (:mod:`~airflow_provider_anthropix.api.digests`): what a job checks a shard file and a
    batch's results against later.
    """

    name: str
    requests: int
    body_bytes: int
    digest: str = ""
    ids_digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "body_bytes": self.body_bytes,
            "digest": self.digest,
            "ids_digest": self.ids_digest,
        }


def body_size(file_bytes: int) -> int:
    """The create body's size for a shard file of ``file_bytes`` (newline-terminated lines)."""
    return file_bytes + ENVELOPE_BYTES


# -- finding the input ---------------------------------------------------------------------------


def resolve_inputs(path: ObjectStoragePath) -> list[ObjectStoragePath]:
    """The request files behind ``path``: the file itself, every request file of a folder, or a glob's matches.

    Sorted by name so that the same folder always splits the same way. Names starting with
    ``_`` or ``.`` (markers, staging folders) are skipped.
    """
    text = str(path.path)
    if globlib.has_magic(text):
        matches = sorted(str(m) for m in path.fs.glob(text))
        files = [_child(path, m) for m in matches if path.fs.isfile(m)]
        if not files:
            raise InputError(f"requests_path {path} matches no file")
        return files
    try:
        if path.is_file():
            return [path]
        if not path.is_dir():
            raise InputError(f"requests_path {path} does not exist")
    except OSError as exc:
        raise InputError(f"requests_path {path} cannot be read ({type(exc).__name__}: {exc})") from None
    found = sorted(
        (entry for entry in path.iterdir() if entry.is_file() and _is_request_file(entry.name)),
        key=lambda p: p.name,
    )
    if not found:
        raise InputError(
            f"requests_path {path} is a folder without request files ({', '.join(REQUEST_SUFFIXES)}; "
            "names starting with _ or . are skipped)"
        )
    return found


def _child(parent: ObjectStoragePath, full_path: str) -> ObjectStoragePath:
    from airflow_provider_anthropix.io.publish import protocol_of

    protocol = protocol_of(parent)
    uri = full_path if protocol in ("file", "local") else f"{protocol}://{full_path}"
    conn_id = getattr(parent, "conn_id", None)
    return ObjectStoragePath(uri, conn_id=conn_id) if conn_id else ObjectStoragePath(uri)


def _is_request_file(name: str) -> bool:
    return not name.startswith(("_", ".")) and name.endswith(REQUEST_SUFFIXES)


def fingerprint_inputs(files: Iterable[ObjectStoragePath], *, content: bool = False) -> list[dict[str, Any]]:
    """Name, size and change stamp (etag or mtime) of each input; with ``content``, a digest of its contents too.

    The stamp is cheap and changes whenever a file is written; the content digest says whether a
    rewritten file still holds the same bytes (an upstream task that writes the same requests
    again). Object stores give one for free (their ETag, a digest of the bytes); other file
    systems are read once.
    """
    prints = []
    for file in files:
        entry, etag = _stamp(file)
        if content:
            entry["content"] = f"etag:{etag}" if etag else "sha256:" + content_digest(partial(file.open, "rb"))
        prints.append(entry)
    return prints


def _stamp(file: ObjectStoragePath) -> tuple[dict[str, Any], str | None]:
    """A fingerprint entry without its content digest, and the file's etag (None: the store gives none)."""
    info = file.fs.info(file.path)
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    stamp = etag or info.get("mtime") or info.get("LastModified") or ""
    return {"uri": str(file), "size": int(info.get("size") or 0), "stamp": str(stamp)}, etag


class ReadFingerprint:
    """:func:`fingerprint_inputs` with ``content=True``, the content digests taken by the read that splits the files.

    The stamps are taken when it is made (before the read); :meth:`digest_for` gives the split's
    reader the hash of each file the store has no etag for, and :meth:`prints` the fingerprint once
    the read has ended: the same entries as ``fingerprint_inputs(files, content=True)``, with the
    digest of exactly the bytes that were split, and without reading 1.5 GB a second time.
    """

    def __init__(self, files: Sequence[ObjectStoragePath]) -> None:
        stamped = [_stamp(file) for file in files]
        self._entries = [entry for entry, _ in stamped]
        self._etags = [etag for _, etag in stamped]
        self._hashes = [None if etag else new_content_hash() for etag in self._etags]

    def digest_for(self, index: int) -> Any:
        """The hash to feed the bytes of file ``index`` into (None: its etag is its content digest)."""
        return self._hashes[index]

    def prints(self) -> list[dict[str, Any]]:
        prints = []
        for entry, etag, digest in zip(self._entries, self._etags, self._hashes, strict=True):
            content = f"etag:{etag}" if etag or digest is None else "sha256:" + digest.hexdigest()
            prints.append({**entry, "content": content})
        return prints


# -- writing shards --------------------------------------------------------------------------------


class WriteBehind:
    """One thread that hashes and writes the buffers a :class:`ShardWriter` fills, while the caller goes on.

    ``hashlib`` and file writes release the GIL: the shard files' SHA-256 and their writes run
    on another core than the split's decoding and validation. Jobs run in the order they were
    given; at most ``depth`` wait (a megabyte each: memory stays bounded). The first failure
    is raised to the caller at its next :meth:`submit` or :meth:`drain`; later jobs are then
    skipped. :meth:`stop` always ends the thread.
    """

    def __init__(self, depth: int = 4) -> None:
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="anthropix-shard-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is None and not self._cancelled:
                    job()
            except BaseException as exc:
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._cancelled = True  # nothing after a failed write is written
            raise error

    def submit(self, job: Callable[[], object]) -> None:
        self._raise()
        if self._cancelled:
            raise RuntimeError("the shard writer was stopped after a failure")
        self._queue.put(job)

    def drain(self) -> None:
        """Wait until every job given so far has run; raise the first failure."""
        self._queue.join()
        self._raise()

    def stop(self, *, cancel: bool = False) -> None:
        """End the thread after the jobs given so far (skipped with ``cancel``)."""
        if cancel:
            self._cancelled = True
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _hash_and_write(handle: IO[bytes], content: Any, data: bytearray) -> None:
    content.update(data)
    handle.write(data)


@dataclass(slots=True)
class ShardWriter:
    """Appends encoded requests to shard files, starting a new one when the next would not fit.

    :param open_shard: opens the named shard for writing (a binary, write-only handle).
    :param prefix: the shard names' folder, e.g. ``round-0``.
    :param max_requests: most requests in one shard.
    :param max_body_bytes: largest create body a shard may make.
    """

    open_shard: Callable[[str], IO[bytes]]
    prefix: str
    max_requests: int = MAX_REQUESTS
    max_body_bytes: int = MAX_BODY_BYTES
    shards: list[Shard] = field(default_factory=list)
    _handle: IO[bytes] | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _requests: int = 0
    _file_bytes: int = 0
    _content: Any = field(default_factory=new_content_hash)
    _ids: IdSetDigest = field(default_factory=IdSetDigest)
    _pending_ids: list[str] = field(default_factory=list)
    _behind: WriteBehind | None = None

    def fits_alone(self, line_bytes: int) -> bool:
        """Whether one request of this encoded size fits a batch at all."""
        return body_size(line_bytes + 1) <= self.max_body_bytes

    def add(self, encoded: bytes | bytearray, custom_id: str) -> None:
        # Called once per request of a million: attributes read once, the shard change out of line.
        file_bytes = self._file_bytes + len(encoded) + 1
        if (
            self._handle is None
            or self._requests >= self.max_requests
            or file_bytes + ENVELOPE_BYTES > self.max_body_bytes
        ):
            self._next_shard()
            file_bytes = len(encoded) + 1
        buffer = self._buffer
        buffer += encoded
        buffer += b"\n"
        self._pending_ids.append(custom_id)
        self._requests += 1
        self._file_bytes = file_bytes
        if len(buffer) >= _WRITE_BUFFER:
            self._write_buffer()

    def _next_shard(self) -> None:
        self._close()
        name = f"shard-{len(self.shards):05d}.jsonl"
        name = f"{self.prefix}/{name}" if self.prefix else name
        self._handle = self.open_shard(name)
        self.shards.append(Shard(name, 0, 0))

    def _write_buffer(self) -> None:
        assert self._handle is not None
        self._ids.update(self._pending_ids)  # one summed pass per buffer: the same digest as one add per id
        self._pending_ids.clear()
        if self._behind is None:
            self._behind = WriteBehind()
        # Hashed and written by the thread; this buffer is its own from now on.
        data, self._buffer = self._buffer, bytearray()
        self._behind.submit(partial(_hash_and_write, self._handle, self._content, data))

    def _close(self) -> None:
        if self._handle is None:
            return
        if self._buffer:
            self._write_buffer()
        handle, self._handle = self._handle, None
        if self._behind is not None:
            self._behind.submit(handle.close)
            self._behind.drain()  # the shard's bytes are written and hashed: its digest is final
        else:
            handle.close()
        last = self.shards[-1]
        self.shards[-1] = replace(
            last,
            requests=self._requests,
            body_bytes=body_size(self._file_bytes),
            digest=self._content.hexdigest(),
            ids_digest=self._ids.hexdigest(),
        )
        self._requests = 0
        self._file_bytes = 0
        self._content = new_content_hash()
        self._ids = IdSetDigest()

    def finish(self) -> list[Shard]:
        try:
            self._close()
        finally:
            self._stop_behind(cancel=False)
        return list(self.shards)

    def abandon(self) -> list[str]:
        """Stop writing after a failure; returns the names written so far, for the caller to remove."""
        self._stop_behind(cancel=True)  # before the handle is closed: the thread may be writing to it
        handle, self._handle = self._handle, None
        self._pending_ids.clear()
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.close()
        return [shard.name for shard in self.shards]

    def _stop_behind(self, *, cancel: bool) -> None:
        behind, self._behind = self._behind, None
        if behind is not None:
            behind.stop(cancel=cancel)


def describe_inputs(files: Sequence[ObjectStoragePath]) -> str:
    """The input files for a message: the first few names, and how many more."""
    names = [str(f) for f in files[:3]]
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    return ", ".join(names) + more


def iter_input_requests(
    files: Iterable[ObjectStoragePath], fingerprint: ReadFingerprint | None = None
) -> Iterator[tuple[str, int, Any]]:
    """``(file, line, decoded request)`` for every request of every input file, in order.

    :param fingerprint: takes the content digest of each file as it is read (see :class:`ReadFingerprint`).
    """
    for index, file in enumerate(files):
        name = str(file)
        digest = fingerprint.digest_for(index) if fingerprint is not None else None
        try:
            for line, request in iter_jsonl(file, digest=digest):
                yield name, line, request
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise InputError(
                f"requests_path {name} is not a readable gzip file ({type(exc).__name__}: {exc}); "
                "a .gz file must be complete and gzip-compressed"
            ) from None
        except FileNotFoundError as exc:
            raise InputError(f"requests_path {name} does not exist ({exc})") from None


def split_requests(
    items: Iterable[tuple[str | None, int | None, Any]],
    writer: ShardWriter,
    *,
    api_version: str,
    default_params: Mapping[str, Any] | None = None,
    max_problems_shown: int = 10,
    progress: Callable[[int, int], None] | None = None,
    source: str | None = None,
    operator: str = "BatchJobOperator",
) -> list[Shard]:
    """Validate every request and write the valid ones into shards; raise if anything is wrong.

    custom_ids must be unique across the whole input (the job merges results by custom_id).
    Writing stops at the first problem; validation goes on, so the error counts them all.
    ``source`` names the input in a problem that has no line (an empty input); ``operator``
    is whose ``default_params`` a hint points at.

    :raises BatchValidationError: naming file, line and custom_id of the first problems.
    """
    checker = BatchChecker(api_version=api_version, max_requests=1 << 62)
    problems = ProblemLog(keep=max_problems_shown)
    encode_into = msgspec.json.Encoder().encode_into
    check = checker.check
    add = writer.add
    largest = writer.max_body_bytes - ENVELOPE_BYTES - 1  # the longest line that fits a batch alone (fits_alone)
    encoded = bytearray()  # reused: each request is encoded over the last one
    seen = 0
    written_bytes = 0
    try:
        for file, line, request in items:
            seen += 1
            if isinstance(request, Undecodable):
                problems.add([ValidationProblem(request.reason, file=file, line=line)])
            else:
                if default_params:
                    request = merge_defaults(request, default_params)
                found = check(request, file=file, line=line)
                if found:
                    checker.problems.clear()
                else:
                    encode_into(request, encoded)
                    if len(encoded) > largest:
                        found = [
                            ValidationProblem(
                                f"this request alone encodes to {len(encoded):,} bytes, more than one batch may "
                                f"hold ({writer.max_body_bytes:,} bytes)",
                                custom_id=str(request.get("custom_id")),
                                file=file,
                                line=line,
                            )
                        ]
                    elif not problems.count:
                        add(encoded, request["custom_id"])
                        written_bytes += len(encoded) + 1
                if found:
                    problems.add(found)
            if progress is not None and seen % 100_000 == 0:
                progress(seen, written_bytes)
        if seen == 0:
            problems.add([ValidationProblem("the input has no requests (every file is empty or blank)", file=source)])
        if problems.count:
            raise problems.error(requests=checker.count, shown=max_problems_shown, operator=operator)
        return writer.finish()
    except BaseException:
        writer.abandon()
        raise


class _CustomIdOnly(msgspec.Struct, gc=False):
    custom_id: str = ""


_ID_DECODER = msgspec.json.Decoder(_CustomIdOnly)


def iter_shard_lines(handle: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """``(custom_id, line)`` for each line of a shard file (the line without its newline)."""
    for line in handle:
        line = line.rstrip(b"\n")
        if line:
            yield _ID_DECODER.decode(line).custom_id, line


def select_requests(
    shards: Iterable[Callable[[], IO[bytes]]], wanted: Collection[str], writer: ShardWriter
) -> list[Shard]:
    """Copy the lines of ``wanted`` custom_ids from earlier shards into new ones (a retry round)."""
    try:
        for opener in shards:
            with opener() as handle:
                for custom_id, line in iter_shard_lines(handle):
                    if custom_id in wanted:
                        writer.add(line, custom_id)
        return writer.finish()
    except BaseException:
        writer.abandon()
        raise


def shard_body(open_shard: Callable[[], IO[bytes]], shard: Shard) -> EncodedBody:
    """The create body of ``shard``, streamed from its file every time it is sent."""

    def chunks() -> Iterator[bytes]:
        yield BODY_HEAD
        with open_shard() as handle:
            held = b""
            while chunk := handle.read(_READ_CHUNK):
                if held:
                    yield held
                held = chunk.replace(b"\n", b",")
        yield held[:-1]  # the last line's newline became a comma the envelope does not want
        yield BODY_TAIL

    return EncodedBody(chunks=chunks, size=shard.body_bytes, request_count=shard.requests)


# -- reading results back ----------------------------------------------------------------------------


#: The token counts a scan sums per model (the names of ``cost.pricing.TokenTotals``' fields).
TOKEN_KEYS = ("input", "output", "cache_creation_input", "cache_read_input")


@dataclass
class RetryScan:
    """What a retry round needs from one batch's results: which requests to send again.

    Also what the job checks and bills the batch by: ``ids_digest`` of every line's custom_id
    (checked against the shard's before anything is acted on), ``lines``, and the token usage
    per model of its succeeded requests. ``copy`` / ``copy_bytes`` / ``copy_digest``: where the
    caller kept the scanned bytes (set by the job's files).
    """

    ids: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    permanent_errors: dict[str, int] = field(default_factory=dict)
    ids_digest: str = ""
    lines: int = 0
    tokens_by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    copy: str | None = None
    copy_bytes: int = 0
    copy_digest: str = ""

    def add(self, custom_id: str, result_type: str) -> None:
        self.ids.add(custom_id)
        self.counts[result_type] = self.counts.get(result_type, 0) + 1


def scan_for_retries(chunks: Iterable[bytes], *, retry_error_types: Collection[str], retry_expired: bool) -> RetryScan:
    """Stream a batch's results and collect the custom_ids a retry round should send again.

    Errored results whose error type is in ``retry_error_types``, and expired ones when
    ``retry_expired``. Canceled requests and other errors (``invalid_request_error``, ...) are
    never retried; errors of other types are counted by type for the job's report.
    """
    scan = RetryScan()
    ids = IdSetDigest()

    by_model = scan.tokens_by_model

    def handle(block: bytes | memoryview) -> None:
        decoded = LINE_DECODER.decode_lines(block)
        scan.lines += len(decoded)
        ids.update([line.custom_id for line in decoded])
        for line in decoded:
            result = line.result
            kind = result.type
            if kind == "succeeded":
                message = result.message
                if message is not None and message.usage is not None:
                    usage = message.usage
                    model = message.model[:128]  # from the server: capped before it reaches the journal
                    totals = by_model.get(model)
                    if totals is None:
                        totals = by_model[model] = dict.fromkeys(TOKEN_KEYS, 0)
                    totals["input"] += usage.input_tokens or 0
                    totals["output"] += usage.output_tokens or 0
                    totals["cache_creation_input"] += usage.cache_creation_input_tokens or 0
                    totals["cache_read_input"] += usage.cache_read_input_tokens or 0
            elif kind == "expired" and retry_expired:
                scan.add(line.custom_id, "expired")
            elif kind == "errored":
                error_type = (result.error.error.type if result.error and result.error.error else "") or "unknown"
                if error_type in retry_error_types:
                    scan.add(line.custom_id, "errored")
                else:
                    error_type = error_type[:64]  # from the server: capped before it reaches a message
                    scan.permanent_errors[error_type] = scan.permanent_errors.get(error_type, 0) + 1

    for piece in line_blocks(chunks):
        handle(piece)
    scan.ids_digest = ids.hexdigest()
    return scan


def merged_results(sources: Iterable[tuple[Iterable[bytes], Collection[str]]]) -> Iterator[bytes]:
    """Results of several batches as one stream, leaving out the lines whose custom_id is in each source's drop set.

    A retried request has a line in every round it was sent in; the job keeps the last one,
    so the earlier rounds' streams drop the ids that were sent again. Lines that stay are
    passed through byte for byte; every source ends with a newline so lines never run together.
    """
    for chunks, drop in sources:
        last = b"\n"
        if not drop:
            for chunk in chunks:
                if chunk:
                    last = chunk[-1:]
                    yield chunk
        else:
            splitter = BlockSplitter()
            for chunk in chunks:
                for piece in splitter.feed(chunk):
                    kept = _without(piece, drop)
                    if kept:
                        yield kept
            tail = splitter.finish()
            if tail:
                kept = _without(tail, drop)
                if kept:
                    last = kept[-1:]
                    yield kept
        if last != b"\n":
            yield b"\n"


def _without(block: bytes | memoryview, drop: Collection[str]) -> bytes:
    data = bytes(block)
    decoded = LINE_DECODER.decode_lines(data)
    if not any(line.custom_id in drop for line in decoded):
        return data
    lines = lines_of(data, len(decoded))
    return b"".join(line + b"\n" for line, info in zip(lines, decoded, strict=True) if info.custom_id not in drop)

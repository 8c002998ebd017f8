"""Request files in, a validated create body out: the local half of submitting a batch.

- :func:`iter_jsonl` reads a request file (``ObjectStoragePath``, optionally ``.gz``) one
  line at a time;
- :func:`spool_batch` merges ``default_params``, validates every request with the rules of
  the connection's API version (:mod:`airflow_provider_anthropix.api.validation`) and writes
  the encoded create body to a local temporary file, so the body is encoded once, its exact
  size is known before sending, and neither the requests nor the body sit in memory.

The spool file is local to the task that makes it and removed when the task is done with
it; nothing else reads it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import IO, Any

import msgspec
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api import BatchValidationError, EncodedBody, ValidationProblem
from airflow_provider_anthropix.api.digests import ReadAheadRawReader
from airflow_provider_anthropix.api.errors import ProblemGroup
from airflow_provider_anthropix.api.limits import MAX_BODY_BYTES, MAX_REQUESTS
from airflow_provider_anthropix.api.validation import MISSING_PARAM, BatchChecker, check_body_size

#: The create body around the encoded requests (a job's shards are wrapped in it too).
BODY_HEAD = b'{"requests":['
BODY_TAIL = b"]}"
_FLUSH_BYTES = 1 << 20
_READ_CHUNK = 1 << 20
#: The read-ahead thread's chunk: large for the same reason as the shard writer's (io/shards.py).
_READ_AHEAD_CHUNK = 4 << 20
_TOO_DEEP = "the line is nested too deeply to read (arrays or objects over about 1,000 levels deep)"
#: Distinct problem messages grouped; past this, problems are still counted but not grouped.
_MAX_GROUPS = 1_000
#: Params a hint can point at ``default_params`` for when every request lacks them.
_DEFAULTABLE = ("model", "max_tokens")


@dataclass(frozen=True)
class Undecodable:
    """A line of the request file that is not JSON; kept as a value so validation can count it."""

    reason: str


def _open_lines(
    path: ObjectStoragePath, stack: contextlib.ExitStack, digest: hashlib._Hash | None = None
) -> tuple[Iterable[bytes], IO[bytes]]:
    raw: IO[bytes] = stack.enter_context(path.open("rb"))
    if digest is not None:
        # Read and hashed a few megabytes ahead by a thread, on another core than the decoding.
        raw = stack.enter_context(
            io.BufferedReader(ReadAheadRawReader(raw, digest, chunk=_READ_AHEAD_CHUNK), buffer_size=_READ_CHUNK)
        )
    if str(path).endswith(".gz"):
        return stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")), raw
    return raw, raw


def iter_jsonl(path: ObjectStoragePath, *, digest: hashlib._Hash | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, decoded_object)`` for each non-blank line of a JSONL file, ``.gz`` or not.

    Lines that are not JSON come back as :class:`Undecodable` so the caller can report them with
    their line number and keep counting. The file is read as a stream: one line in memory at a time.

    :param digest: a hash (:func:`~airflow_provider_anthropix.api.digests.new_content_hash`) fed with
        every byte of the file as stored (compressed, for ``.gz``) as it is read: the content digest of
        the file the lines came from, without a second read. Complete once the iteration has ended.
    """
    decoder = msgspec.json.Decoder()
    with contextlib.ExitStack() as stack:
        lines, raw = _open_lines(path, stack, digest)
        for number, line in enumerate(lines, start=1):
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line or line.isspace():  # as ``not line.strip()``, without copying the line
                continue
            try:
                yield number, decoder.decode(line)
            except msgspec.DecodeError as exc:
                yield number, Undecodable(f"the line is not valid JSON ({exc})")
            except RecursionError:
                yield number, Undecodable(_TOO_DEEP)
            except UnicodeDecodeError as exc:
                yield number, Undecodable(f"the line is not UTF-8 text ({exc.reason} at byte {exc.start})")
        if digest is not None:  # whatever a reader above left unread (gzip padding): the digest is of the whole file
            while raw.read(_READ_CHUNK):
                pass


def merge_defaults(request: Any, default_params: Mapping[str, Any] | None) -> Any:
    """``default_params`` merged under the request's own ``params`` (the request's keys win).

    Shallow on purpose: a request that sets ``messages`` or ``metadata`` replaces the default
    as a whole, which is what a Messages API body means. Anything that is not a well-formed
    entry is returned unchanged for validation to describe.
    """
    if not default_params or not isinstance(request, Mapping):
        return request
    params = request.get("params")
    if not isinstance(params, Mapping):
        return request
    return {**request, "params": {**default_params, **params}}


# -- building the body --------------------------------------------------------------------------


@dataclass
class SpooledBatch:
    """A validated create body written to a local temporary file; stream it with :meth:`body`."""

    path: str
    request_count: int
    size: int

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes, read from disk in 1 MB pieces (called once per send attempt)."""
        with open(self.path, "rb") as fh:
            while chunk := fh.read(_READ_CHUNK):
                yield chunk

    def body(self) -> EncodedBody:
        return EncodedBody(chunks=self.chunks, size=self.size, request_count=self.request_count)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@dataclass
class ProblemLog:
    """Keeps the first few problems, groups identical messages and counts the rest.

    A file of 100,000 bad lines stays cheap: at most ``keep`` problems, and a handful of
    examples for each of at most :data:`_MAX_GROUPS` distinct messages, are held. The create's
    spool and a job's split both collect their problems here, so both report them alike.
    """

    keep: int
    shown: list[ValidationProblem] = field(default_factory=list)
    groups: dict[str, ProblemGroup] = field(default_factory=dict)
    count: int = 0
    ungrouped: int = 0

    def add(self, problems: Iterable[ValidationProblem]) -> None:
        for problem in problems:
            self.count += 1
            if len(self.shown) < self.keep:
                self.shown.append(problem)
            group = self.groups.get(problem.message)
            if group is None and len(self.groups) < _MAX_GROUPS:
                group = self.groups[problem.message] = ProblemGroup(problem.message)
            if group is None:
                self.ungrouped += 1
            else:
                group.add(problem)

    def hints(self, requests: int, operator: str) -> list[str]:
        """A fix for the whole batch: a required param missing from every request belongs in default_params."""
        found = []
        for name in _DEFAULTABLE:
            group = self.groups.get(MISSING_PARAM.format(name))
            if group is not None and requests > 0 and group.count == requests:
                found.append(
                    f"params.{name} is missing in every request; set it once for all of them with "
                    f'default_params={{"{name}": ...}} ({operator}\'s default_params argument)'
                )
        return found

    def error(self, *, requests: int, shown: int, operator: str) -> BatchValidationError:
        """The error that lists what was found (call it only when :attr:`count` is not 0).

        :param requests: how many requests were checked (for the hints).
        :param shown: how many lines (groups) the message lists.
        :param operator: whose ``default_params`` a hint points at.
        """
        # Grouped over the whole input only while every problem found a group; else the plain first few.
        groups = list(self.groups.values()) if not self.ungrouped else None
        return BatchValidationError(
            self.shown, count=self.count, shown=shown, groups=groups, hints=self.hints(requests, operator)
        )


def spool_batch(
    items: Iterable[tuple[int | None, Any]],
    *,
    api_version: str,
    default_params: Mapping[str, Any] | None = None,
    file: str | None = None,
    spool_dir: str | None = None,
    max_requests: int = MAX_REQUESTS,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_problems_shown: int = 10,
    progress: Callable[[int, int], None] | None = None,
    observe: Callable[[int, int | None, Any, int], None] | None = None,
) -> SpooledBatch:
    """Validate every request and write the encoded create body to a temporary file.

    Nothing is sent anywhere: this runs before any HTTP call, so a bad batch costs nothing.
    Every request is checked (custom_id pattern and uniqueness, required params, roles,
    ``stream``, types, the rules of ``api_version``), then the request count and the size of
    the encoded body. Encoding stops at the first problem, validation does not, so the error
    gives the total count of problems and the first ``max_problems_shown`` of them.

    :param items: ``(line_number_or_None, request)`` pairs, e.g. from :func:`iter_jsonl`.
    :param api_version: the ``anthropic-version`` the batch will be sent with.
    :param default_params: merged under each request's ``params``.
    :param file: the input's name for problem messages (``file:line``); None for in-memory lists.
    :param spool_dir: where the temporary body goes (default: the system temp dir).
    :param max_requests: most requests a batch may hold.
    :param max_body_bytes: largest encoded body the API accepts.
    :param max_problems_shown: how many problems the error lists before "... and N more".
    :param progress: called as ``progress(requests_seen, body_bytes)`` every 10,000 requests.
    :param observe: called as ``observe(index, line, request, encoded_size)`` for each valid request
        written (the cost estimate's tally), so nothing is read or encoded twice.
    :raises BatchValidationError: anything is wrong; the temporary file is removed.
    """
    checker = BatchChecker(api_version=api_version, max_requests=max_requests)
    problems = ProblemLog(keep=max_problems_shown)
    encoder = msgspec.json.Encoder()
    fd, spool_path = tempfile.mkstemp(prefix="anthropix-batch-", suffix=".json", dir=spool_dir)
    size = 0
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            buffer = bytearray(BODY_HEAD)
            check = checker.check
            encode_into = encoder.encode_into
            for index, (line, request) in enumerate(items):
                if isinstance(request, Undecodable):
                    problems.add([ValidationProblem(request.reason, index=index, file=file, line=line)])
                else:
                    if default_params:
                        request = merge_defaults(request, default_params)
                    try:
                        found = check(request, file=file, line=line)
                    except RecursionError:
                        found = [ValidationProblem(_TOO_DEEP, index=index, file=file, line=line)]
                    if found:
                        problems.add(found)
                        # The checker keeps every problem it finds; we keep our own bounded copy.
                        checker.problems.clear()
                    if not problems.count:
                        if written:
                            buffer += b","
                        start = len(buffer)
                        encode_into(request, buffer, -1)  # straight into the buffer: no bytes object per request
                        written += 1
                        if observe is not None:
                            observe(index, line, request, len(buffer) - start)
                        if len(buffer) >= _FLUSH_BYTES:
                            size += len(buffer)
                            out.write(buffer)
                            buffer.clear()
                if progress is not None and (index + 1) % 10_000 == 0:
                    progress(index + 1, size + len(buffer))
            buffer += BODY_TAIL
            size += len(buffer)
            out.write(buffer)
        # Batch-level problems (an empty batch) carry no line; still say which file it was.
        problems.add(replace(p, file=p.file or file) for p in checker.finish())
        if not problems.count:
            too_big = check_body_size(size, max_body_bytes=max_body_bytes)
            if too_big is not None:
                problems.add([too_big])
        if problems.count:
            raise problems.error(requests=checker.count, shown=max_problems_shown, operator="CreateBatchOperator")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spool_path)
        raise
    return SpooledBatch(path=spool_path, request_count=written, size=size)

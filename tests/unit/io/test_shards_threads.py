"""The split's helper threads: the input read and hashed ahead, the shard files hashed and written behind.

Each must give exactly the bytes and digests of a plain serial read / write, raise a failure of
its thread in the caller, and never outlive the split (success, refused input or failure).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from pathlib import Path
from typing import IO, Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api.digests import ReadAheadRawReader
from airflow_provider_anthropix.api.errors import BatchValidationError
from airflow_provider_anthropix.io.shards import ShardWriter, iter_input_requests, split_requests


def helper_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("anthropix-read-ahead", "anthropix-shard-writer")]


def request(i: int, text: str = "hello") -> dict[str, Any]:
    params = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": f"{text} {i}"}]}
    return {"custom_id": f"r-{i}", "params": params}


class Flaky(io.RawIOBase):
    """A readable handle that fails with ``OSError`` after ``good`` reads."""

    def __init__(self, data: bytes, good: int) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._good = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._good == 0:
            raise OSError("the store went away")
        self._good -= 1
        return self._data.readinto(buffer)


def test_read_ahead_gives_the_bytes_and_their_digest() -> None:
    data = bytes(range(256)) * 1000 + b"tail"
    digest = hashlib.sha256()
    with io.BufferedReader(ReadAheadRawReader(io.BytesIO(data), digest, chunk=4093, depth=2), buffer_size=1000) as f:
        read = f.read()
    assert read == data
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert helper_threads() == []


def test_read_ahead_raises_the_threads_failure_where_the_caller_reads() -> None:
    raw = ReadAheadRawReader(Flaky(b"x" * 100_000, good=3), hashlib.sha256(), chunk=1000)
    buffer = bytearray(1000)
    for _ in range(3):
        assert raw.readinto(buffer) == 1000
    with pytest.raises(OSError, match="the store went away"):
        raw.readinto(buffer)
    raw.close()
    assert helper_threads() == []


def test_read_ahead_stops_when_closed_early_with_its_queue_full() -> None:
    raw = ReadAheadRawReader(io.BytesIO(b"y" * 1_000_000), hashlib.sha256(), chunk=100, depth=2)
    assert raw.readinto(bytearray(10)) == 10
    raw.close()  # the thread is blocked on a full queue: close must still end it
    assert helper_threads() == []


def shard_writer(folder: Path, **limits: int) -> ShardWriter:
    def open_shard(name: str) -> IO[bytes]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        return open(folder / name, "wb")

    return ShardWriter(open_shard, prefix="round-0", **limits)


def test_shards_written_behind_carry_the_digest_of_their_bytes(tmp_path: Path) -> None:
    lines = [json.dumps(request(i, "x" * (i % 300))).encode() for i in range(5000)]
    writer = shard_writer(tmp_path, max_requests=1800, max_body_bytes=1 << 30)
    for i, line in enumerate(lines):
        writer.add(line, f"r-{i}")
    shards = writer.finish()

    assert [s.requests for s in shards] == [1800, 1800, 1400]
    start = 0
    for shard in shards:
        body = (tmp_path / shard.name).read_bytes()
        assert body == b"".join(line + b"\n" for line in lines[start : start + shard.requests])
        assert shard.digest == hashlib.sha256(body).hexdigest()
        start += shard.requests
    assert helper_threads() == []


class FailingHandle(io.BytesIO):
    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good

    def write(self, data: Any) -> int:
        if self.good == 0:
            raise OSError("disk full")
        self.good -= 1
        return super().write(data)


def test_a_failed_write_behind_is_raised_and_the_thread_ends() -> None:
    writer = ShardWriter(lambda name: FailingHandle(good=1), prefix="round-0", max_body_bytes=1 << 30)
    line = b"z" * 100_000

    def fill() -> None:
        for i in range(200):  # ~20 MB: past the first buffer, the second write fails
            writer.add(line, f"r-{i}")
        writer.finish()

    with pytest.raises(OSError, match="disk full"):
        fill()
    assert writer.abandon() == ["round-0/shard-00000.jsonl"]
    assert helper_threads() == []


def test_no_helper_thread_outlives_a_split_success_or_a_refused_input(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(request(i, "w" * 2000)) + "\n" for i in range(3000)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + "not json\n")

    from airflow_provider_anthropix.io.shards import ReadFingerprint

    files = [ObjectStoragePath(f"file://{good}")]
    shards = split_requests(
        iter_input_requests(files, ReadFingerprint(files)), shard_writer(tmp_path / "a"), api_version="2023-06-01"
    )
    assert sum(s.requests for s in shards) == 3000
    assert helper_threads() == []

    files = [ObjectStoragePath(f"file://{bad}")]
    writer = shard_writer(tmp_path / "b")
    with pytest.raises(BatchValidationError, match="not valid JSON"):
        split_requests(iter_input_requests(files, ReadFingerprint(files)), writer, api_version="2023-06-01")
    assert helper_threads() == []

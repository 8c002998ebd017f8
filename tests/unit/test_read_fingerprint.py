"""The input fingerprint a job records is the same whether taken by a separate read or by the split's read."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.io.shards import ReadFingerprint, fingerprint_inputs, iter_input_requests


def request(i: int) -> bytes:
    params = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": f"q {i}"}]}
    return json.dumps({"custom_id": f"r-{i}", "params": params}).encode() + b"\n"


def test_the_split_read_gives_the_separate_read_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + request(0) + b"\n  \n" + request(1) + b"not json\n")
    (tmp_path / "b.jsonl").write_bytes(request(2) + request(3).rstrip(b"\n"))  # no final newline
    # Two gzip members and zero padding after them: bytes no line reader asks for.
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(request(4)) + gzip.compress(request(5)) + b"\0" * 9)
    files = [ObjectStoragePath(f"file://{tmp_path / name}") for name in ("a.jsonl", "b.jsonl", "c.jsonl.gz")]

    read = ReadFingerprint(files)
    lines = [(Path(name).name, line) for name, line, _ in iter_input_requests(files, read)]

    expected = [("a.jsonl", 1), ("a.jsonl", 4), ("a.jsonl", 5), ("b.jsonl", 1), ("b.jsonl", 2)]
    assert lines == [*expected, ("c.jsonl.gz", 1), ("c.jsonl.gz", 2)]
    assert read.prints() == fingerprint_inputs(files, content=True)
    assert all(entry["content"].startswith("sha256:") for entry in read.prints())

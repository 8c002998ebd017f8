"""Routing a block of result lines by outcome: every line lands in its type's group, byte for byte."""

from __future__ import annotations

from airflow_provider_anthropix.io.by_outcome import split_by_result_type
from airflow_provider_anthropix.io.summary import Summariser
from tests.support.payloads import counts_of, mixed_results, result_line


def test_split_by_result_type_keeps_every_line_byte_exact() -> None:
    data = mixed_results(200)
    summary = Summariser()
    decoded = summary.feed_block(data)
    groups = split_by_result_type(data, decoded)
    assert {kind: count for kind, (_, count) in groups.items()} == counts_of(data)
    rejoined = sorted(line for block, _ in groups.values() for line in block.splitlines())
    assert rejoined == sorted(data.splitlines())
    # A last line without its newline still ends with one in its group.
    tail = result_line("t", "errored").rstrip(b"\n")
    group = split_by_result_type(tail, Summariser().feed_block(tail))
    assert group == {"errored": (tail + b"\n", 1)}

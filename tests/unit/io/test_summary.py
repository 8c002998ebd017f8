"""The line summariser over blocks of the stream: counts, tokens, duplicates, bad lines, and the completeness checks on it."""

from __future__ import annotations

import pytest

from airflow_provider_anthropix.api.lines import BlockSplitter
from airflow_provider_anthropix.api.models import RequestCounts
from airflow_provider_anthropix.cost.pricing import TokenTotals
from airflow_provider_anthropix.io.checks import ResultsMismatchError, completeness_problems, validate_on_mismatch
from airflow_provider_anthropix.io.summary import ResultsFormatError, Summariser
from tests.support.payloads import chunked, counts_of, mixed_results, result_line


def summarise(data: bytes, chunk: int = 97) -> Summariser:
    summary = Summariser()
    splitter = BlockSplitter()
    for piece in chunked(data, chunk):
        for block in splitter.feed(piece):
            summary.feed_block(block)
    tail = splitter.finish()
    if tail:
        summary.feed_block(tail)
    return summary


@pytest.mark.smoke
def test_summary_counts_types_and_tokens_per_model() -> None:
    data = (
        result_line("a", input_tokens=100, output_tokens=10, cache_write=7, cache_read=3)
        + result_line("b", model="claude-haiku-4-5", input_tokens=1, output_tokens=2)
        + result_line("c", "errored")
        + result_line("d", "canceled")
        + result_line("e", "expired")
    )
    summary = summarise(data, chunk=13)
    assert summary.lines == 5
    assert summary.counts == {"succeeded": 2, "errored": 1, "canceled": 1, "expired": 1}
    assert summary.tokens_by_model["claude-sonnet-4-5-20250929"] == TokenTotals(100, 10, 7, 3)
    assert summary.tokens.to_dict() == {"input": 101, "output": 12, "cache_creation_input": 7, "cache_read_input": 3}
    assert summary.duplicate_count == 0


def test_blocks_reassemble_the_stream_exactly_whatever_the_chunking() -> None:
    data = mixed_results(50) + b'{"custom_id":"last","result":{"type":"expired"}}'  # no final newline
    for size in (1, 7, 100, 10_000, len(data)):
        splitter = BlockSplitter()
        blocks = [bytes(block) for piece in chunked(data, size) for block in splitter.feed(piece)]
        assert all(block.endswith(b"\n") for block in blocks)
        assert b"".join(blocks) + splitter.finish() == data
    assert summarise(data).lines == 51


def test_duplicates_are_found_within_and_across_blocks() -> None:
    data = result_line("x") + result_line("y") + result_line("x") + result_line("z") * 3 + result_line("y")
    summary = summarise(data, chunk=len(result_line("x")) + 5)
    assert summary.lines == 7
    assert summary.duplicate_count == 4  # x once, z twice, y once
    assert set(summary.duplicate_examples) == {"x", "y", "z"}


def test_a_line_that_is_not_a_result_is_named_with_its_number() -> None:
    data = result_line("a") + result_line("b") + b'{"custom_id": "c", "result": {"nope": 1}}\n'
    with pytest.raises(ResultsFormatError, match="results line 3"):
        summarise(data, chunk=10_000)
    with pytest.raises(ResultsFormatError, match="line 2"):
        summarise(result_line("a") + b"not json\n", chunk=10_000)


def test_completeness_problems_name_what_differs() -> None:
    data = mixed_results(100)
    summary = summarise(data)
    exact = RequestCounts(**counts_of(data))
    assert completeness_problems(summary, exact) == []
    wrong = RequestCounts(
        succeeded=exact.succeeded + 1, errored=exact.errored, canceled=exact.canceled, expired=exact.expired
    )
    problems = completeness_problems(summary, wrong)
    assert any("100 result lines, but the batch holds 101 requests" in p for p in problems)
    assert any("succeeded" in p for p in problems)
    error = ResultsMismatchError(problems)
    assert "on_mismatch='warn'" in str(error)
    assert validate_on_mismatch("warn") == "warn"
    with pytest.raises(ValueError, match="on_mismatch"):
        validate_on_mismatch("ignore")


def test_errored_results_are_counted_by_error_type() -> None:
    lines = [
        result_line("a", "errored", error_type="invalid_request_error"),
        result_line("b", "errored", error_type="overloaded_error"),
        result_line("c", "errored", error_type="invalid_request_error"),
        b'{"custom_id":"d","result":{"type":"errored"}}\n',
        b'{"custom_id":"e","result":{"type":"errored","error":{"type":"error","error":{"type":""}}}}\n',
        result_line("f", "errored", error_type="x" * 500),
        result_line("g"),
    ]
    summary = Summariser()
    summary.feed_block(b"".join(lines))
    assert summary.errored_by_type == {
        "invalid_request_error": 2,
        "overloaded_error": 1,
        "unknown": 2,
        "x" * 64: 1,
    }

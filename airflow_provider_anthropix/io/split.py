"""Route result lines to one output per outcome (succeeded / errored / canceled / expired)."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_anthropix.io.summary import LineSummary


def lines_of(block: bytes | memoryview, expected: int) -> list[bytes]:
    """The non-blank lines of ``block`` (without newlines); ``expected`` is the decoded count, to cross-check."""
    lines = bytes(block).split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if len(lines) != expected:
        lines = [line for line in lines if line.strip()]
    if len(lines) != expected:
        raise ValueError(f"a block of {expected} decoded results has {len(lines)} lines")
    return lines


def split_by_result_type(block: bytes | memoryview, decoded: Sequence[LineSummary]) -> dict[str, tuple[bytes, int]]:
    """Group a block's lines by ``result.type``: ``{type: (lines joined, each with its newline; count)}``.

    Every line keeps its bytes; one that arrived without a final newline gets one, so
    every output is proper JSONL.
    """
    groups: dict[str, list[bytes]] = {}
    for line, item in zip(lines_of(block, len(decoded)), decoded, strict=True):
        kind = item.result.type
        group = groups.get(kind)
        if group is None:
            groups[kind] = [line]
        else:
            group.append(line)
    return {kind: (b"\n".join(lines) + b"\n", len(lines)) for kind, lines in groups.items()}

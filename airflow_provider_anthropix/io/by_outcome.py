"""Route result lines to one output per outcome (succeeded / errored / canceled / expired)."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_anthropix.api.lines import lines_of
from airflow_provider_anthropix.io.result_line import ResultLine


def split_by_result_type(block: bytes | memoryview, decoded: Sequence[ResultLine]) -> dict[str, tuple[bytes, int]]:
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

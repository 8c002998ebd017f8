"""Is the download complete? Compare what we counted with what the batch says it holds."""

from __future__ import annotations

from collections.abc import Mapping

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.models import RESULT_TYPES, RequestCounts
from airflow_provider_anthropix.io.summary import Summariser

ON_MISMATCH = ("fail", "warn")


class ResultsMismatchError(AnthropixError, ValueError):
    """The results do not match the batch's ``request_counts`` (or repeat a custom_id)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "results do not match the batch: "
            + "; ".join(problems)
            + ". Set on_mismatch='warn' to publish them anyway."
        )


def validate_on_mismatch(value: str) -> str:
    if value not in ON_MISMATCH:
        raise ValueError(f"on_mismatch must be one of {', '.join(ON_MISMATCH)}; got {value!r}")
    return value


def completeness_problems(summary: Summariser, expected: RequestCounts | None) -> list[str]:
    """Plain-language problems, empty when the results are complete and every custom_id is unique."""
    problems: list[str] = []
    if expected is not None:
        total = expected.total
        if summary.lines != total:
            problems.append(f"{summary.lines:,} result lines, but the batch holds {total:,} requests")
        wanted: Mapping[str, int] = expected.to_dict()
        for kind in RESULT_TYPES:
            got = summary.counts.get(kind, 0)
            if got != wanted[kind]:
                problems.append(f"{got:,} {kind} results, the batch reports {wanted[kind]:,}")
        if expected.processing:
            problems.append(f"the batch still reports {expected.processing:,} requests processing")
    unknown = sorted(kind for kind, n in summary.counts.items() if kind not in RESULT_TYPES and n)
    if unknown:
        problems.append(f"unknown result type(s) {', '.join(unknown)}")
    if summary.duplicate_count:
        examples = ", ".join(summary.duplicate_examples)
        problems.append(f"{summary.duplicate_count:,} lines repeat an earlier custom_id (e.g. {examples})")
    return problems

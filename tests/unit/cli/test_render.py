"""The CLI's text output: progress bars in the terminal's encoding, aligned tables."""

from __future__ import annotations

import pytest

from airflow_provider_anthropix.cli.render import progress_bar, table

pytestmark = pytest.mark.smoke


def test_progress_bar() -> None:
    class Utf:
        encoding = "utf-8"

    class Ascii:
        encoding = "ascii"

    assert progress_bar(5, 10, width=10, stream=Utf()) == "█████░░░░░  50%"  # type: ignore[arg-type]
    assert progress_bar(0, 0, width=4, stream=Ascii()) == "#### 100%"  # type: ignore[arg-type]
    assert progress_bar(1, 3, width=3, stream=Ascii()) == "#..  33%"  # type: ignore[arg-type]


def test_table_aligns_columns_and_numbers_right() -> None:
    text = table(["ID", "N"], [["a", "1"], ["longer", "1,000"]], right=frozenset({1}))
    assert text.splitlines() == ["ID          N", "a           1", "longer  1,000"]

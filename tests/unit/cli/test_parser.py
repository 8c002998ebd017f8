"""The CLI's parser, its generated reference in docs/operate.md, its import cost, and its tables."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from airflow_provider_anthropix.cli import main, reference
from airflow_provider_anthropix.cli.render import progress_bar, table
from tests.support.paths import REPO

pytestmark = pytest.mark.smoke

DOCS = REPO / "docs" / "operate.md"


def test_docs_reference_matches_the_parser() -> None:
    """Regenerate with ``python -m airflow_provider_anthropix.cli.reference --write docs/operate.md``."""
    text = DOCS.read_text()
    assert reference.splice(text) == text, (
        "docs/operate.md's CLI reference is stale: run "
        "`.venv/bin/python -m airflow_provider_anthropix.cli.reference --write docs/operate.md`"
    )


def test_docs_exit_table_matches_the_codes() -> None:
    from airflow_provider_anthropix.cli.parser import EXIT_CODES

    text = DOCS.read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in text, f"exit status {code} is missing or stale in docs/operate.md"


def test_reference_covers_every_action() -> None:
    rendered = reference.render()
    for action in ("list", "show", "wait", "cancel", "delete", "results", "archive"):
        assert f"### `anthropix batches {action}`" in rendered
    assert "--conn-id ID" in rendered and "exit status:" in rendered


def test_splice_needs_the_marker() -> None:
    with pytest.raises(ValueError, match="marker"):
        reference.splice("# no markers here\n")


_PROBE = """
import sys
from airflow_provider_anthropix.cli import main
main({argv!r})
heavy = sorted(m for m in ("airflow", "httpx", "requests", "rich", "pendulum") if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("argv", [["--help"], ["batches", "list", "--limit", "zero"], ["batches", "--help"]])
def test_help_and_usage_errors_import_nothing_heavy(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


def test_usage_error_names_the_flag() -> None:
    err = io.StringIO()
    assert main(["batches", "list", "--limit", "0"], out=io.StringIO(), err=err) == 2


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


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20d", 20 * 86_400),
        ("36h", 36 * 3600),
        ("90m", 5400),
        ("2w", 14 * 86_400),
        ("1d12h", 129_600),
        ("1.5D", 129_600),
    ],
)
def test_archive_older_than_takes_an_age(text: str, seconds: int) -> None:
    from airflow_provider_anthropix.cli.parser import build_parser

    args = build_parser().parse_args(["batches", "archive", "--to", "/x", "--older-than", text])
    assert args.older_than.total_seconds() == seconds


@pytest.mark.parametrize("text", ["20", "d", "20 days", "3x", "1d-2h", ""])
def test_archive_older_than_refuses_anything_else(text: str) -> None:
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", err)
        status = main(["batches", "archive", "--to", "/x", "--older-than", text], out=io.StringIO(), err=err)
    assert status == 2 and "expected an age such as 20d" in err.getvalue()

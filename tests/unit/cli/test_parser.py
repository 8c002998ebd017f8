"""The CLI's parser: usage errors name the flag, and help or a usage error imports nothing heavy."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from airflow_provider_anthropix.cli import main

pytestmark = pytest.mark.smoke

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

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

"""The CLI reference in docs/operate.md: generated from the parser, and kept in step with it."""

from __future__ import annotations

import pytest

from airflow_provider_anthropix.cli import reference
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

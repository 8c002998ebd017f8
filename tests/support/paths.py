"""Where things are, for tests in any folder: the repository and the test data, not ``parents[n]`` of a test file."""

from __future__ import annotations

from pathlib import Path

#: The repository's root (pyproject.toml, docs/, the package).
REPO = Path(__file__).resolve().parents[2]
#: tests/data: the bad-input corpus and the request shapes.
DATA = REPO / "tests" / "data"

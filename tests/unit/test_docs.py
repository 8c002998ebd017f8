"""The docs behave like a provider's docs: every page is reachable, every operator argument is documented."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re

import pytest
from airflow.sdk import BaseOperator

from tests.support.paths import REPO

DOCS = REPO / "docs"
# The page's generator is the one list of public classes; loaded from its file, not put on sys.path.
_spec = importlib.util.spec_from_file_location("anthropix_operator_table", REPO / "scripts" / "operator_table.py")
assert _spec is not None and _spec.loader is not None
operator_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(operator_table)
PUBLIC = operator_table.PUBLIC
init_arguments = operator_table.init_arguments

pytestmark = pytest.mark.smoke


def operators_page_sections() -> dict[str, str]:
    text = (DOCS / "operators.md").read_text()
    parts = re.split(r"^## (\w+)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def public_operator_classes() -> set[str]:
    """Every BaseOperator subclass defined in the operators and sensors packages."""
    found: set[str] = set()
    for package in ("airflow_provider_anthropix.operators", "airflow_provider_anthropix.sensors"):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            module = importlib.import_module(f"{package}.{info.name}")
            for name, obj in vars(module).items():
                if (
                    inspect.isclass(obj)
                    and issubclass(obj, BaseOperator)
                    and obj.__module__ == module.__name__
                    and not name.startswith("_")
                ):
                    found.add(f"{module.__name__}.{name}")
    return found


def test_every_public_operator_is_in_the_table_list() -> None:
    listed = {f"{module}.{name}" for module, name in PUBLIC}
    assert public_operator_classes() <= listed, "add the new operator to scripts/operator_table.py PUBLIC"


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[name for _, name in PUBLIC])
def test_every_init_argument_is_documented(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    sections = operators_page_sections()
    assert name in sections, f"docs/operators.md has no '## {name}' section"
    documented = set(re.findall(r"^\| `(\w+)` \|", sections[name], flags=re.M))
    missing = [p.name for p in init_arguments(cls) if p.name not in documented]
    assert missing == [], (
        f"{name} arguments missing from docs/operators.md: {missing} "
        "(regenerate: .venv/bin/python scripts/operator_table.py > docs/operators.md)"
    )


def test_the_index_links_every_page() -> None:
    index = (DOCS / "index.md").read_text()
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", index))
    pages = {page.name for page in DOCS.glob("*.md")} - {"index.md"}
    assert sorted(pages - linked) == []


def test_the_readme_links_the_index_and_the_changelog() -> None:
    readme = (REPO / "README.md").read_text()
    assert "](docs/index.md)" in readme
    assert "](CHANGELOG.md)" in readme
    assert (REPO / "CHANGELOG.md").is_file()

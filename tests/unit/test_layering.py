"""The rules of the house (docs/architecture.md), checked on the source: which layer may import which.

- nothing under ``api/`` or ``workflow/`` imports Airflow;
- ``io/`` never imports ``workflow/`` (nor the clients' HTTP libraries);
- nothing outside ``emulator/`` imports the emulator (the CLI hands over to its entry point);
- operators and sensors never speak HTTP themselves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import REPO

PACKAGE = REPO / "airflow_provider_anthropix"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at module level, in functions and under TYPE_CHECKING alike."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            named = {name for name in submodules if (PACKAGE.parent / f"{name.replace('.', '/')}.py").exists()}
            # ``from pkg import module`` imports that module; ``from pkg import name`` the package.
            found.update(named or {node.module})
    return found


def files_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py")) if folder else sorted(PACKAGE.rglob("*.py"))


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in files
        for module in sorted(imported_modules(path))
        if any(module == name or module.startswith(name + ".") for name in forbidden)
    ]


@pytest.mark.parametrize("layer", ["api", "workflow"])
def test_api_and_workflow_never_import_airflow(layer: str) -> None:
    assert offenders(files_under(layer), ("airflow",)) == []


def test_io_never_imports_the_workflow_or_http_libraries() -> None:
    forbidden = ("airflow_provider_anthropix.workflow", "requests", "httpx")
    assert offenders(files_under("io"), forbidden) == []


def test_nothing_but_the_emulator_imports_the_emulator() -> None:
    outside = [p for p in files_under("") if "emulator" not in p.relative_to(PACKAGE).parts]
    assert offenders(outside, ("airflow_provider_anthropix.emulator",)) == []


@pytest.mark.parametrize("layer", ["operators", "sensors"])
def test_operators_and_sensors_do_not_speak_http(layer: str) -> None:
    assert offenders(files_under(layer), ("requests", "httpx", "airflow_provider_anthropix.api.sync_client")) == []


def test_cost_builds_on_the_api_alone() -> None:
    """Pricing and the estimate are pure: io, workflow and operators import them, never the reverse."""
    package = "airflow_provider_anthropix"
    allowed = (f"{package}.api", f"{package}.cost")
    found = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in files_under("cost")
        for module in sorted(imported_modules(path))
        if (module.startswith(package) and not module.startswith(allowed)) or module.startswith("airflow.")
    ]
    assert found == []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_between_modules() -> None:
    """No two modules import each other, directly or round a loop (TYPE_CHECKING imports count too)."""
    graph = {module_name(path): imported_modules(path) for path in files_under("")}
    edges = {name: {m for m in imports if m in graph and m != name} for name, imports in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)

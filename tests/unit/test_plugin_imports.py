"""The plugin module is imported by every process that loads plugins, task processes too: it must stay light."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

_PROBE = """
import sys, time
import airflow.plugins_manager  # already loaded wherever Airflow imports plugins
before = set(sys.modules)
started = time.perf_counter()
import airflow_provider_anthropix.plugins as plugin
elapsed = time.perf_counter() - started
added = sorted(set(sys.modules) - before)
print("ADDED", added)
print("HEAVY", sorted(m for m in added if m.split(".")[0] in ("fastapi", "jinja2", "httpx", "requests", "starlette")
                      or m.startswith("airflow_provider_anthropix.plugins.")))
print("APP", type(plugin.AnthropixPlugin.fastapi_apps[0]["app"]).__name__)
"""


@pytest.mark.smoke
def test_importing_the_plugin_loads_nothing_heavy() -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line[:5] in ("ADDED", "HEAVY", "APP L"))
    assert lines["HEAVY"] == "[]", lines
    assert lines["APP"] == "LazyApp"
    added = set(ast.literal_eval(lines["ADDED"]))
    assert "airflow_provider_anthropix.plugins" in added
    assert added <= {"airflow_provider_anthropix", "airflow_provider_anthropix.plugins"}, added

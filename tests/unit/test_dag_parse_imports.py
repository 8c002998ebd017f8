"""A DAG file that imports our operators, sensor and triggers must not load the task-time machinery.

The dag-processor imports every DAG file over and over; the HTTP clients (requests, httpx),
msgspec, pyarrow, the export pipeline and the emulator belong to the task (or the triggerer),
not to parsing. Airflow itself already loads httpx and msgspec, so a plain ``sys.modules``
check would miss our own imports of them: the probe forgets those modules after
``import airflow.sdk`` and records every attempt to import them again while ours load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.smoke

DAG_FACING = [
    "airflow_provider_anthropix.operators.create",
    "airflow_provider_anthropix.operators.fetch",
    "airflow_provider_anthropix.operators.cancel",
    "airflow_provider_anthropix.operators.job",
    "airflow_provider_anthropix.operators.split",
    "airflow_provider_anthropix.sensors.batch",
    "airflow_provider_anthropix.triggers.batch",
    "airflow_provider_anthropix.triggers.job",
]
HEAVY = ["requests", "httpx", "msgspec", "pyarrow", "starlette", "uvicorn"]
#: Our own modules that only a running task or trigger needs.
TASK_TIME = [
    "airflow_provider_anthropix.api.sync_client",
    "airflow_provider_anthropix.api.async_client",
    "airflow_provider_anthropix.api.calls",
    "airflow_provider_anthropix.api.operations",
    # the error tree and the batch model are dataclass-heavy: the operators import them in execute
    "airflow_provider_anthropix.api.errors",
    "airflow_provider_anthropix.api.models",
    "airflow_provider_anthropix.api.retry",
    "airflow_provider_anthropix.workflow.events",
    "airflow_provider_anthropix.hooks.anthropix",
    "airflow_provider_anthropix.io.export",
    "airflow_provider_anthropix.io.pipeline",
    "airflow_provider_anthropix.io.parquet",
    "airflow_provider_anthropix.io.requests_file",
    "airflow_provider_anthropix.workflow.job",
    "airflow_provider_anthropix.workflow.ledger",
    "airflow_provider_anthropix.emulator",
]

PROBE = textwrap.dedent(
    """
    import importlib, importlib.abc, json, sys

    import airflow.sdk

    heavy = set({heavy!r})
    for name in list(sys.modules):
        if name.split(".")[0] in heavy:
            del sys.modules[name]
    asked = []

    class Spy(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in heavy:
                asked.append(fullname)
            return None

    sys.meta_path.insert(0, Spy())
    for module in {modules!r}:
        importlib.import_module(module)
    print(json.dumps({{"asked": sorted({{n.split(".")[0] for n in asked}}), "loaded": sorted(sys.modules)}}))
    """
)


def probe(modules: list[str]) -> dict[str, list[str]]:
    code = PROBE.format(heavy=HEAVY, modules=modules)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_dag_facing_modules_loads_no_heavy_module() -> None:
    result = probe(DAG_FACING)
    assert result["asked"] == [], f"importing the operators imported {result['asked']}"
    loaded = set(result["loaded"])
    assert set(DAG_FACING) <= loaded
    assert sorted(loaded & set(TASK_TIME)) == []


def test_the_probe_sees_a_heavy_import() -> None:
    """The spy is not blind: the hook (task-time) does import the clients' libraries."""
    result = probe(["airflow_provider_anthropix.api.sync_client", "airflow_provider_anthropix.io.summary"])
    assert "requests" in result["asked"]
    assert "msgspec" in result["asked"]

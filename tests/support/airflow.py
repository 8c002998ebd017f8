"""Helpers for tests that run real DAGs: a throw-away Airflow home with a migrated database, DAG files."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@contextlib.contextmanager
def migrated_airflow_home(home: Path, dags: Path, **extra_env: str) -> Iterator[None]:
    """Point the running Airflow at ``home`` with a freshly migrated SQLite DB, then back.

    Airflow reads its settings when first imported, so switching homes inside one test
    process needs the settings and the ORM reconfigured both ways. ``extra_env`` adds
    ``AIRFLOW__...`` overrides (e.g. an empty fernet key so stored rows can be scanned).
    """
    patch = pytest.MonkeyPatch()
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    } | extra_env
    for name, value in env.items():
        patch.setenv(name, value)
    from airflow import settings
    from airflow.utils import db

    settings.configure_vars()
    settings.reconfigure_orm()
    db.initdb()
    try:
        yield
    finally:
        patch.undo()
        settings.configure_vars()
        settings.reconfigure_orm()


#: The first line of a test DAG whose body ``load_dag_source`` fills in (``DAG_ID`` is replaced there).
DAG_OPEN = 'with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:'


class DictStateStore:
    """Stands in for ``context["task_state_store"]`` (get/set/delete) when a test calls ``execute`` directly.

    It keeps what the real store would: JSON, so a value that only survives in memory fails
    here too, and never ``None`` (the operators delete a key rather than blank it).
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        assert value is not None
        self.data[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def import_dag(path: Path, module_name: str) -> Any:
    """Import the DAG file at ``path`` under ``module_name`` and return its ``dag``.

    Loaded from its file rather than by name: the DAGs folder is a temporary folder that is not
    on ``sys.path``, and each test's DAG gets a module name of its own.
    """
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def load_dag_source(dags: Path, dag_id: str, header: str, body: str) -> Any:
    """Write a DAG file (``header`` + dedented ``body``, ``DAG_ID`` filled in) into ``dags`` and import its ``dag``.

    ``dag.test()`` needs the DAG in a bundle, so the file lives in the DAGs folder.
    """
    source = header + textwrap.dedent(body).replace("DAG_ID", repr(dag_id))
    path = dags / f"{dag_id}.py"
    path.write_text(source)
    return import_dag(path, f"test_dag_{dag_id}")


def states(dag_run: Any) -> dict[str, str]:
    """Each task's final state in ``dag_run`` (``{"create": "success", ...}``), for one readable assert."""
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def write_prompts(path: Path, ids: list[str], markers: dict[str, str] | None = None) -> None:
    """A request file: one request per custom_id, with an emulator marker appended where ``markers`` says."""
    markers = markers or {}
    with path.open("w") as fh:
        for custom_id in ids:
            text = f"question {custom_id} {markers.get(custom_id, '')}".strip()
            fh.write(json.dumps({"custom_id": custom_id, "params": {"messages": [{"role": "user", "content": text}]}}))
            fh.write("\n")


def load_example_dag(dags: Path, file_name: str) -> Any:
    """Copy ``example_dags/`` into the DAGs folder (``dag.test()`` needs a bundle) and import ``file_name``'s ``dag``."""
    import shutil

    from tests.support.paths import REPO

    target = dags / f"example_{Path(file_name).stem}"
    shutil.copytree(REPO / "example_dags", target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.spec_from_file_location(f"example_{Path(file_name).stem}", target / file_name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag

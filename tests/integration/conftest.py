"""Fixtures for the integration tests that run real DAGs with ``dag.test()``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.airflow import migrated_airflow_home


@pytest.fixture(scope="module")
def airflow_dags(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A throw-away AIRFLOW_HOME with a migrated SQLite DB and an empty DAGs folder, one per test module.

    Migrating the database takes seconds, so a module's DAG runs share it; each writes its
    DAG under its own ``dag_id`` so the runs stay apart.
    """
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    with migrated_airflow_home(home, dags):
        yield dags

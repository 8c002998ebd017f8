"""The example DAG ``example_dags/archive_results.py`` in ``dag.test()`` against the emulator.

Batches of different ages are made by moving the emulator's clock between creates; the
archive reckons ages from :func:`io.archive.current_time`, pointed at that clock here. The
DAG is run twice: the first run exports what is not archived yet, the second nothing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pendulum
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.io import archive
from tests.support.airflow import states
from tests.support.paths import REPO

DAY = 86_400


def _create(http: httpx.Client, n: int, tag: str) -> str:
    requests = [
        {
            "custom_id": f"{tag}-{i}",
            "params": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": tag}]},
        }
        for i in range(n)
    ]
    response = http.post("/v1/messages/batches", json={"requests": requests})
    response.raise_for_status()
    return str(response.json()["id"])


def _load(dags: Path, name: str) -> Any:
    target = dags / name
    shutil.copytree(REPO / "example_dags", target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.spec_from_file_location(f"example_archive_{name}", target / "archive_results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def test_archive_example_dag_exports_once_then_nothing(
    airflow_dags: Path,
    emulator: EmulatorHandle,
    emulator_http: httpx.Client,
    anthropix_conn_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(archive, "current_time", lambda: pendulum.from_timestamp(emulator.app.clock.now(), tz="UTC"))
    gone = _create(emulator_http, 2, "gone")
    emulator.advance(4 * DAY)
    soon = _create(emulator_http, 3, "soon")
    emulator.advance(20 * DAY)
    mid = _create(emulator_http, 4, "mid")
    emulator.advance(6 * DAY)
    new = _create(emulator_http, 5, "new")
    emulator.advance(3600)  # gone: 30 days old (results archived); soon: 26 days (expire in < 3 days)
    # A planted manifest naming another batch where `mid` goes: it must not count as its archive.
    destination = tmp_path / "archive"
    (destination / mid).mkdir(parents=True)
    (destination / mid / "_manifest.json").write_text(json.dumps({"batch_id": new, "complete": True, "files": []}))
    monkeypatch.setenv("ANTHROPIX_ARCHIVE_DESTINATION", destination.as_uri())

    dag = _load(airflow_dags, "archive_first")
    dag_run = dag.test()
    assert states(dag_run) == {"archive": "success"}
    for batch_id in (soon, mid, new):
        manifest = json.loads((destination / batch_id / "_manifest.json").read_text())
        assert manifest["batch_id"] == batch_id and manifest["complete"] is True
        assert (destination / batch_id / "results.jsonl").stat().st_size > 0
    assert not (destination / gone).exists()
    logs = caplog.text
    assert f"{soon}: results expire in" in logs and "exported now" in logs
    assert "'exported': 3, 'already_archived': 0, 'expiring_soon': 1, 'expired': 1" in logs
    assert f"names batch '{new}', not {mid}" in logs
    assert "sk-ant-emulator-test-key" not in logs
    downloads = emulator.stats()["calls"]["results"]
    caplog.clear()

    dag_run = _load(airflow_dags, "archive_second").test()
    assert states(dag_run) == {"archive": "success"}
    assert emulator.stats()["calls"]["results"] == downloads  # nothing downloaded again
    logs = caplog.text
    assert "'exported': 0, 'already_archived': 3, 'expiring_soon': 0, 'expired': 1" in logs

"""A connection kept only in Airflow's metadata database: the CLI says it cannot see it, and how to reach it.

Outside a task Airflow's SDK reads connections from the environment and the secrets
backend, never from the database. The error names a shell line that exports the
connection from the database into the environment; this test runs that exact line.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_anthropix.cli import main
from airflow_provider_anthropix.cli.credentials import export_command
from airflow_provider_anthropix.emulator import EmulatorHandle
from tests.support.airflow import migrated_airflow_home

BIN = Path(sys.executable).parent


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def test_db_only_connection_is_refused_then_reached_with_the_documented_export(
    tmp_path: Path, emulator: EmulatorHandle, emulator_http: httpx.Client, emulator_api_key: str
) -> None:
    created = emulator_http.post(
        "/v1/messages/batches",
        json={
            "requests": [
                {
                    "custom_id": "a",
                    "params": {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
                }
            ]
        },
    ).json()["id"]
    home = tmp_path / "home"
    home.mkdir()
    with migrated_airflow_home(home, tmp_path / "dags"):
        from airflow.models import Connection
        from airflow.utils.session import create_session

        with create_session() as session:
            session.add(
                Connection(
                    conn_id="cli_db_only",
                    conn_type="anthropix",
                    host=emulator.url,
                    password=emulator_api_key,
                    extra=json.dumps({"max_retries": 0}),
                )
            )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_") and k != "ANTHROPIC_API_KEY"} | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    var = "AIRFLOW_CONN_CLI_DB_ONLY"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(var, raising=False)
        status, _, err = run("batches", "list", "--conn-id", "cli_db_only")
    assert status == 6, err
    assert export_command("cli_db_only") in err

    # The documented line, run by a shell against the real `airflow` command and database.
    exported = subprocess.run(
        ["bash", "-c", f'{export_command("cli_db_only")} && printf %s "${var}"'],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert exported.returncode == 0, exported.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(var, exported.stdout)
        status, out, err = run("batches", "list", "--conn-id", "cli_db_only", "--json")
    assert status == 0, err
    assert [b["id"] for b in json.loads(out)] == [created]

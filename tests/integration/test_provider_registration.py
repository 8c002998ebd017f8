"""Airflow's provider manager accepts the package: `airflow providers ...` in a temporary AIRFLOW_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_cli(tmp_path: Path, *args: str) -> str:
    env = os.environ | {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.smoke
def test_providers_list_and_hooks_show_anthropix(tmp_path: Path) -> None:
    listing = airflow_cli(tmp_path, "providers", "list", "--output", "plain")
    assert "airflow-provider-anthropix" in listing
    hooks = airflow_cli(tmp_path, "providers", "hooks", "--output", "plain")
    line = next(line for line in hooks.splitlines() if line.startswith("anthropix "))
    assert "airflow_provider_anthropix.hooks.anthropix.AnthropixHook" in line
    assert "anthropix_conn_id" in line


def test_provider_info_declares_connection_fields() -> None:
    from airflow_provider_anthropix.get_provider_info import get_provider_info

    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-anthropix"
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "anthropix"
    assert set(conn_type["conn-fields"]) == {
        "anthropic_version",
        "console_url_template",
        "anthropic_beta",
        "workspace_id",
        "timeout",
        "max_retries",
        "proxies",
    }
    assert conn_type["ui-field-behaviour"]["relabeling"] == {"password": "API Key", "host": "Base URL"}

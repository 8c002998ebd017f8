"""``--conn-id`` with ``AIRFLOW_CONN_<ID>`` set never imports Airflow; without it, Airflow's secrets backend is asked.

Each run is a fresh interpreter, as a person's shell starts one: what is in ``sys.modules``
at the end is what the command imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle

ANTHROPIX = str(Path(sys.executable).parent / "anthropix")

#: Runs one command in-process and reports the exit status and every Airflow module it loaded.
PROBE = """
import json, sys
from airflow_provider_anthropix.cli import main
status = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow."))
sys.stderr.write("PROBE " + json.dumps({"status": status, "airflow": loaded}) + "\\n")
"""


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_") and k != "ANTHROPIC_API_KEY"}
    return base | extra


def probe(*argv: str, env: dict[str, str]) -> tuple[int, list[str], str, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=120)
    line = next(line for line in proc.stderr.splitlines() if line.startswith("PROBE "))
    report = json.loads(line[len("PROBE ") :])
    return report["status"], report["airflow"], proc.stdout, proc.stderr


def _create(http: httpx.Client) -> str:
    params = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    response = http.post("/v1/messages/batches", json={"requests": [{"custom_id": "a", "params": params}]})
    response.raise_for_status()
    return str(response.json()["id"])


def _forms(url: str, key: str) -> dict[str, str]:
    scheme, _, hostport = url.partition("://")
    return {
        "json": json.dumps({"conn_type": "anthropix", "password": key, "host": url, "extra": {"max_retries": 0}}),
        "uri": f"anthropix://{scheme}://:{quote(key, safe='')}@{hostport}/?max_retries=0",
        "uri-encoded-host": f"anthropix://:{quote(key, safe='')}@{quote(scheme + '://' + hostport.split(':')[0], safe='')}"
        f":{hostport.split(':')[1]}?__extra__={quote(json.dumps({'max_retries': 0}), safe='')}",
    }


@pytest.mark.smoke
@pytest.mark.parametrize("form", ["json", "uri", "uri-encoded-host"])
def test_an_environment_connection_is_read_without_importing_airflow(
    emulator: EmulatorHandle, emulator_http: httpx.Client, emulator_api_key: str, form: str
) -> None:
    batch_id = _create(emulator_http)
    value = _forms(emulator.url, emulator_api_key)[form]
    status, airflow, out, err = probe(
        "batches", "list", "--conn-id", "cli_fast", "--json", env=_env(AIRFLOW_CONN_CLI_FAST=value)
    )
    assert status == 0, err
    assert [b["id"] for b in json.loads(out)] == [batch_id]
    assert airflow == []


def test_a_bad_setting_in_an_environment_connection_is_exit_6_without_airflow(emulator: EmulatorHandle) -> None:
    key = "sk-ant-never-printed-0042"
    bad = {"conn_type": "anthropix", "password": key, "host": emulator.url, "extra": {"max_retries": -1}}
    status, airflow, out, err = probe(
        "batches", "list", "--conn-id", "cli_bad", env=_env(AIRFLOW_CONN_CLI_BAD=json.dumps(bad))
    )
    assert (status, out, airflow) == (6, "", [])
    assert "extra.max_retries: must be 0 or more" in err and key not in err


@pytest.mark.parametrize(
    "value",
    [
        '{"conn_type": "anthropix", "password": "sk-ant-never-printed-0042", ',  # cut short
        "anthropix://:sk-ant-never-printed-0042",  # no @: urllib reads the key as a port
        "anthropix://:sk-ant-never-printed-0042@[sk-ant-never-printed-0042",  # a broken bracketed host
        "sk-ant-never-printed-0042",  # the key alone
        '{"conn_type": "anthropix", "password": "sk-ant-never-printed-0042", "extra": "{sk-ant-never-printed-0042"}',
        # The key typed into the host field: the hook's check quotes the host, the CLI masks the key in it.
        '{"password": "sk-ant-never-printed-0042", "host": "sk-ant-never-printed-0042"}',
    ],
)
def test_a_malformed_environment_connection_never_prints_the_key(value: str) -> None:
    proc = subprocess.run(
        [ANTHROPIX, "batches", "list", "--conn-id", "cli_broken"],
        capture_output=True,
        text=True,
        env=_env(AIRFLOW_CONN_CLI_BROKEN=value),
        timeout=120,
    )
    assert proc.returncode == 6, proc.stderr
    assert "AIRFLOW_CONN_CLI_BROKEN" in proc.stderr or "cli_broken" in proc.stderr
    assert "never-printed" not in proc.stderr + proc.stdout


def test_without_the_variable_the_secrets_backend_is_asked(
    emulator: EmulatorHandle, emulator_http: httpx.Client, emulator_api_key: str, tmp_path: Path
) -> None:
    """The fallback: Airflow's configured ``[secrets] backend`` (here the local-file one) still serves the CLI.

    Standard output carries the JSON and nothing else, although Airflow logs on this path: it warns
    that no Fernet key is set (none is, here), and a retried call logs a warning through Airflow's
    logging. Those go to standard error.
    """
    batch_id = _create(emulator_http)
    connections = tmp_path / "connections.json"
    connections.write_text(
        json.dumps({"cli_from_backend": {"conn_type": "anthropix", "password": emulator_api_key, "host": emulator.url}})
    )
    env = _env(
        AIRFLOW__CORE__FERNET_KEY="",
        AIRFLOW__SECRETS__BACKEND="airflow.secrets.local_filesystem.LocalFilesystemBackend",
        AIRFLOW__SECRETS__BACKEND_KWARGS=json.dumps({"connections_file_path": str(connections)}),
    )
    emulator.add_fault("status", endpoint="list", status=529, count=1, retry_after=0.1)
    status, airflow, out, err = probe("batches", "list", "--conn-id", "cli_from_backend", "--json", env=env)
    assert status == 0, err
    assert [b["id"] for b in json.loads(out)] == [batch_id]  # the whole of standard output is the JSON
    assert "airflow.sdk" in airflow  # this path is Airflow's own
    assert "retry 1 of" in err and "cryptography key" in err  # the logs were written, to standard error


def test_a_key_typed_into_the_host_of_a_backend_connection_is_not_printed(tmp_path: Path) -> None:
    """No secrets masker outside a task: the CLI redacts the connection's password from a settings error itself."""
    key = "sk-ant-typed-into-host-0123456789"
    connections = tmp_path / "connections.json"
    connections.write_text(json.dumps({"cli_key_in_host": {"conn_type": "anthropix", "password": key, "host": key}}))
    from cryptography.fernet import Fernet

    env = _env(
        AIRFLOW__CORE__FERNET_KEY=Fernet.generate_key().decode(),
        AIRFLOW__SECRETS__BACKEND="airflow.secrets.local_filesystem.LocalFilesystemBackend",
        AIRFLOW__SECRETS__BACKEND_KWARGS=json.dumps({"connections_file_path": str(connections)}),
    )
    status, _, out, err = probe("batches", "list", "--conn-id", "cli_key_in_host", env=env)
    assert status == 6, err
    assert "cli_key_in_host" in err
    assert key not in out + err

"""The ``anthropix`` command line against the emulator: every subcommand, JSON shapes, exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_anthropix.cli import main
from airflow_provider_anthropix.emulator import EmulatorHandle
from tests.support.http import QuietHandler

ANTHROPIX = str(Path(sys.executable).parent / "anthropix")


def _params(text: str = "hello") -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}


def create(http: httpx.Client, n: int = 3) -> str:
    body = {"requests": [{"custom_id": f"r{i}", "params": _params(f"q{i}")} for i in range(n)]}
    response = http.post("/v1/messages/batches", json=body)
    response.raise_for_status()
    return str(response.json()["id"])


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def base(emulator: EmulatorHandle, emulator_api_key: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``--base-url`` flags for the session emulator; the key comes from the environment, as documented."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", emulator_api_key)
    return ["--base-url", emulator.url]


def ended(http: httpx.Client, emulator: EmulatorHandle, n: int = 3) -> str:
    batch_id = create(http, n)
    emulator.advance(5)
    return batch_id


# -- list ------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_list_table_shows_every_batch_with_counts(
    emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str]
) -> None:
    emulator.config.processing_seconds = 3600  # still processing when listed, however slow the first import
    ids = [create(emulator_http, n) for n in (2, 3)]
    status, out, _ = run("batches", "list", *base)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "STATUS", "PROGRESS", "DONE"]
    assert [line.split()[0] for line in lines[1:3]] == ids[::-1]  # newest first
    # aligned: every row's STATUS starts in the header's column
    column = lines[0].index("STATUS")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines[1:3])
    assert "2 batches, 2 not ended, 5 requests" in out


def test_list_json_is_the_api_objects(emulator_http: httpx.Client, base: list[str]) -> None:
    batch_id = create(emulator_http)
    status, out, _ = run("batches", "list", "--json", *base)
    assert status == 0
    data = json.loads(out)
    served = emulator_http.get(f"/v1/messages/batches/{batch_id}").json()
    assert [b["id"] for b in data] == [batch_id]
    assert data[0]["request_counts"] == served["request_counts"]
    assert set(served) <= set(data[0])


def test_list_limit_and_all_page_through(emulator_http: httpx.Client, base: list[str]) -> None:
    ids = [create(emulator_http, 1) for _ in range(103)]
    status, out, _ = run("batches", "list", "--limit", "2", "--json", *base)
    assert status == 0 and [b["id"] for b in json.loads(out)] == ids[::-1][:2]
    status, out, _ = run("batches", "list", "--all", "--json", *base)
    assert status == 0 and [b["id"] for b in json.loads(out)] == ids[::-1]  # more than one page of 100
    status, _, err = run("batches", "list", "--all", "--limit", "5", *base)
    assert status == 2 and "--all" in err


def test_list_empty(emulator: EmulatorHandle, base: list[str]) -> None:
    assert run("batches", "list", *base)[:2] == (0, "no batches\n")


# -- show / wait -----------------------------------------------------------------------------


def test_show_table_and_json(emulator_http: httpx.Client, base: list[str]) -> None:
    batch_id = create(emulator_http, 4)
    status, out, _ = run("batches", "show", batch_id, *base)
    assert status == 0
    assert f"id            {batch_id}" in out and "in_progress" in out and "/4" in out
    status, out, _ = run("batches", "show", batch_id, "--json", *base)
    assert status == 0 and json.loads(out)["id"] == batch_id


def test_show_unknown_is_exit_3(emulator: EmulatorHandle, base: list[str]) -> None:
    status, out, err = run("batches", "show", "msgbatch_nope", *base)
    assert (status, out) == (3, "") and "not found" in err


def test_wait_draws_progress_until_ended(
    emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str]
) -> None:
    batch_id = create(emulator_http, 5)
    status, out, err = run("batches", "wait", batch_id, "--interval", "0.05", "--json", *base)
    assert status == 0
    batch = json.loads(out)
    assert batch["processing_status"] == "ended" and batch["request_counts"]["succeeded"] == 5
    assert f"{batch_id}: 5/5 requests ended" in err.splitlines()  # the last progress line


def test_wait_timeout_is_exit_9(emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str]) -> None:
    emulator.config.processing_seconds = 3600
    batch_id = create(emulator_http, 2)
    status, _, err = run("batches", "wait", batch_id, "--interval", "0.05", "--timeout", "0.2", *base)
    assert status == 9 and "still in_progress" in err


# -- cancel / delete -------------------------------------------------------------------------


def test_cancel_and_wait(emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str]) -> None:
    emulator.config.processing_seconds = 3600
    batch_id = create(emulator_http, 4)
    status, out, _ = run("batches", "cancel", batch_id, "--wait", "--interval", "0.05", "--json", *base)
    assert status == 0
    batch = json.loads(out)
    assert batch["processing_status"] == "ended" and batch["cancel_initiated_at"]
    assert batch["request_counts"]["canceled"] > 0
    # an ended batch cannot be canceled: the API's 400 is exit 7
    status, _, err = run("batches", "cancel", batch_id, *base)
    assert status == 7 and "already ended" in err


def test_delete(emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str]) -> None:
    emulator.config.processing_seconds = 3600
    running = create(emulator_http, 1)
    status, _, err = run("batches", "delete", running, *base)
    assert status == 7 and "ended" in err
    emulator.advance(7200)
    status, out, _ = run("batches", "delete", running, "--json", *base)
    assert status == 0 and json.loads(out) == {"id": running, "type": "message_batch_deleted"}
    assert run("batches", "show", running, *base)[0] == 3


# -- results ---------------------------------------------------------------------------------


def _served(http: httpx.Client, batch_id: str) -> bytes:
    return http.get(f"/v1/messages/batches/{batch_id}/results").content


@pytest.mark.smoke
def test_results_to_stdout_are_the_served_bytes(
    emulator: EmulatorHandle, emulator_http: httpx.Client, emulator_api_key: str
) -> None:
    emulator.config.error_rate = 0.3
    batch_id = ended(emulator_http, emulator, 40)
    env = {**os.environ, "ANTHROPIC_API_KEY": emulator_api_key}
    proc = subprocess.run(
        [ANTHROPIX, "batches", "results", batch_id, "--base-url", emulator.url],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _served(emulator_http, batch_id)
    assert proc.stdout.count(b"\n") == 40
    assert f"{batch_id}: 40/40 results".encode() in proc.stderr


@pytest.mark.smoke
def test_results_export_to_a_folder(
    emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str], tmp_path: Path
) -> None:
    batch_id = ended(emulator_http, emulator, 12)
    status, out, _ = run("batches", "results", batch_id, "-o", str(tmp_path / "out"), "--json", *base)
    assert status == 0
    summary = json.loads(out)
    assert summary["lines"] == 12 and summary["complete"] is True
    assert (tmp_path / "out" / "results.jsonl").read_bytes() == _served(emulator_http, batch_id)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["batch_id"] == batch_id and summary["estimated_cost_usd"] == manifest["estimated_cost_usd"]


def test_results_export_relative_path_split_and_table(
    emulator: EmulatorHandle,
    emulator_http: httpx.Client,
    base: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator.config.error_rate = 0.5
    batch_id = ended(emulator_http, emulator, 20)
    monkeypatch.chdir(tmp_path)
    status, out, _ = run("batches", "results", batch_id, "-o", "rel", "--split", *base)
    assert status == 0
    assert f"20 results of {batch_id} in file://{tmp_path}/rel" in out
    written = sorted(p.name for p in (tmp_path / "rel").iterdir())
    assert "succeeded.jsonl" in written and "errored.jsonl" in written and "_manifest.json" in written


def test_results_parquet(
    emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str], tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    batch_id = ended(emulator_http, emulator, 7)
    status, _, err = run("batches", "results", batch_id, "-o", f"file://{tmp_path}/pq", "--format", "parquet", *base)
    assert status == 0, err
    assert pq.read_table(tmp_path / "pq" / "results.parquet").num_rows == 7


def test_results_flags_that_need_output(emulator_http: httpx.Client, base: list[str]) -> None:
    status, _, err = run("batches", "results", "msgbatch_x", "--format", "parquet", *base)
    assert status == 2 and "need -o" in err


def test_results_before_the_end_is_exit_7(
    emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str]
) -> None:
    emulator.config.processing_seconds = 3600
    batch_id = create(emulator_http)
    status, _, err = run("batches", "results", batch_id, *base)
    assert status == 7 and f"anthropix batches wait {batch_id}" in err


def test_results_cut_stream_publishes_nothing(
    emulator: EmulatorHandle,
    emulator_http: httpx.Client,
    emulator_api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = {"conn_type": "anthropix", "password": emulator_api_key, "host": emulator.url, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_CLI_CUT", json.dumps(conn))
    batch_id = ended(emulator_http, emulator, 30)
    emulator.add_fault("cut", endpoint="results", after_bytes=2000, count=None)
    status, _, err = run("batches", "results", batch_id, "-o", str(tmp_path / "cut"), "--conn-id", "cli_cut")
    assert emulator.stats()["faults_fired"] >= 1
    assert status == 5, err
    assert not (tmp_path / "cut").exists() or not any((tmp_path / "cut").iterdir())


def test_results_bad_destination_is_exit_8(
    emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str]
) -> None:
    batch_id = ended(emulator_http, emulator, 1)
    status, _, err = run("batches", "results", batch_id, "-o", "nosuchscheme://bucket/x", *base)
    assert status == 8 and "nosuchscheme" in err


# -- credentials and exit codes --------------------------------------------------------------


def test_wrong_key_is_exit_4(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong-key-000")
    status, _, err = run("batches", "list", "--base-url", emulator.url)
    assert status == 4 and "401" in err
    assert "sk-ant-wrong-key-000" not in err


def test_missing_key_is_exit_6(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    status, _, err = run("batches", "list", "--base-url", emulator.url)
    assert status == 6 and "ANTHROPIC_API_KEY" in err


@pytest.mark.smoke
def test_conn_id_from_the_environment(
    emulator: EmulatorHandle, emulator_http: httpx.Client, emulator_api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "anthropix", "password": emulator_api_key, "host": emulator.url}
    monkeypatch.setenv("AIRFLOW_CONN_CLI_TEST", json.dumps(conn))
    batch_id = create(emulator_http)
    status, out, _ = run("batches", "list", "--conn-id", "cli_test", "--json")
    assert status == 0 and [b["id"] for b in json.loads(out)] == [batch_id]


def test_transient_errors_are_exit_5(
    emulator: EmulatorHandle, emulator_api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "anthropix", "password": emulator_api_key, "host": emulator.url, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_CLI_FLAKY", json.dumps(conn))
    emulator.add_fault("status", endpoint="list", status=529, count=1)
    status, _, err = run("batches", "list", "--conn-id", "cli_flaky")
    assert status == 5 and "529" in err
    assert run("batches", "list", "--conn-id", "cli_flaky")[0] == 0  # the fault fired once, then passed
    emulator.add_fault("garble", endpoint="list", count=1)  # a 200 that is half a JSON object
    status, _, err = run("batches", "list", "--conn-id", "cli_flaky")
    assert status == 5 and "not valid JSON" in err


@pytest.mark.smoke
def test_unknown_connection_is_exit_6_and_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CLI_NOWHERE", raising=False)
    status, _, err = run("batches", "list", "--conn-id", "cli_nowhere")
    assert status == 6
    assert "AIRFLOW_CONN_CLI_NOWHERE" in err and "airflow connections export" in err


def test_bad_connection_field_is_exit_6(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CLI_BAD", json.dumps({"conn_type": "anthropix", "password": "k", "host": "x:1"}))
    status, _, err = run("batches", "list", "--conn-id", "cli_bad")
    assert status == 6 and "no scheme" in err


def test_unreachable_is_exit_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-unreachable")
    conn = {"conn_type": "anthropix", "password": "k", "host": "http://127.0.0.1:9", "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_CLI_DOWN", json.dumps(conn))
    status, _, err = run("batches", "show", "msgbatch_x", "--conn-id", "cli_down")
    assert status == 5 and "127.0.0.1:9" in err


def test_usage_errors_are_exit_2() -> None:
    assert run("batches", "list", "--limit", "0")[0] == 2
    assert run("batches", "show")[0] == 2
    assert run("batches")[0] == 2
    assert run("--no-such-flag")[0] == 2
    assert run("--help")[0] == 0


# -- the console script, python -m, and the emulator subcommand ------------------------------


def test_python_dash_m_and_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_anthropix", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.startswith("anthropix ")


def test_emulator_subcommand_serves_and_stops() -> None:
    proc = subprocess.Popen(
        [ANTHROPIX, "emulator", "--port", "0", "--processing-seconds", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Anthropix emulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        env = {**os.environ, "ANTHROPIC_API_KEY": "sk-ant-any"}
        listing = subprocess.run(
            [ANTHROPIX, "batches", "list", "--base-url", url, "--json"], capture_output=True, text=True, env=env
        )
        assert listing.returncode == 0 and json.loads(listing.stdout) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


# -- refusals with their own status (issue 20) -----------------------------------------------


class _ForgedBatch(QuietHandler):
    """An API whose ended batch names a results_url on another port; it records every request it gets."""

    results_url = ""
    paths: list[str] = []

    def do_GET(self) -> None:
        _ForgedBatch.paths.append(self.path)
        batch = {
            "id": "msgbatch_forged",
            "type": "message_batch",
            "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": "2026-01-01T00:00:00.000000Z",
            "expires_at": "2026-01-02T00:00:00.000000Z",
            "ended_at": "2026-01-01T00:01:00.000000Z",
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": _ForgedBatch.results_url,
        }
        self.reply(200, {"content-type": "application/json", "request-id": "req_forged"}, json.dumps(batch).encode())


@pytest.fixture
def forged(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """The forging API (its URL) and what a listener on the foreign port received (nothing, we hope)."""
    received: list[bytes] = []
    foreign = socket.socket()
    foreign.bind(("127.0.0.1", 0))
    foreign.listen()
    foreign.settimeout(0.2)

    def listen() -> None:
        while True:
            try:
                conn, _ = foreign.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    received.append(conn.recv(65536))

    threading.Thread(target=listen, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ForgedBatch)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _ForgedBatch.results_url = (
        f"http://127.0.0.1:{foreign.getsockname()[1]}/v1/messages/batches/msgbatch_forged/results"
    )
    _ForgedBatch.paths = []
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-forged-test-key")
    yield f"http://127.0.0.1:{server.server_address[1]}", received  # type: ignore[misc]
    server.shutdown()
    server.server_close()
    foreign.close()


@pytest.mark.parametrize("to", ["stdout", "folder"])
def test_a_results_url_on_another_host_is_refused_with_its_own_status(
    forged: tuple[str, list[str]], tmp_path: Path, to: str
) -> None:
    url, received = forged
    output = ["-o", str(tmp_path / "out")] if to == "folder" else []
    status, out, err = run("batches", "results", "msgbatch_forged", *output, "--base-url", url)
    assert status == 10, err  # not 1, which the table keeps for bugs
    assert err.startswith("anthropix: refused: results_url origin http://127.0.0.1:")
    assert "refusing to send the API key there" in err and "sk-ant-forged-test-key" not in err
    assert out == "" and received == [] and not (tmp_path / "out").exists()
    assert _ForgedBatch.paths == ["/v1/messages/batches/msgbatch_forged"]


@pytest.mark.parametrize("spelling", ["path", "path/", "file-uri"])
def test_an_output_folder_that_is_a_symlink_is_refused_before_any_download(
    emulator: EmulatorHandle, emulator_http: httpx.Client, base: list[str], tmp_path: Path, spelling: str
) -> None:
    batch_id = ended(emulator_http, emulator, 2)
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    output = {"path": str(link), "path/": f"{link}/", "file-uri": link.as_uri()}[spelling]
    before = emulator.stats()["calls"].get("results", 0)
    status, out, err = run("batches", "results", batch_id, "-o", output, *base)
    assert status == 2, err
    assert "is a symbolic link" in err and f"-o {real}" in err
    assert out == "" and sorted(p.name for p in real.iterdir()) == ["keep.txt"]
    assert emulator.stats()["calls"].get("results", 0) == before  # refused before the download
    status, _, err = run("batches", "results", batch_id, "-o", str(real), *base)  # the real folder works
    assert status == 0, err
    assert (real / "results.jsonl").exists() and (real / "keep.txt").read_text() == "mine"

"""The CLI as a user runs it: a subprocess that prints one line, serves, and stops on a signal."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

LINE_RE = re.compile(r"^Anthropix emulator listening on (http://127\.0\.0\.1:(\d+))\n$")
HEADERS = {"x-api-key": "cli-key", "anthropic-version": "2026-10-21"}


def start(*args: str, command: list[str] | None = None) -> tuple[subprocess.Popen[str], str]:
    argv = command or [sys.executable, "-m", "airflow_provider_anthropix.emulator"]
    proc = subprocess.Popen(
        [*argv, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        proc.kill()
        pytest.fail("the emulator printed nothing within 30 s")
    line = proc.stdout.readline()
    match = LINE_RE.match(line)
    if match is None:
        proc.kill()
        pytest.fail(f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}")
    return proc, match.group(1)


def stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=15)
    return proc.returncode, out, err


@pytest.fixture
def cli() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.smoke
def test_cli_prints_its_line_serves_and_exits_cleanly_on_sigterm(cli: list[subprocess.Popen[str]]) -> None:
    proc, url = start(
        "--api-key",
        "cli-key",
        "--processing-seconds",
        "0.1",
        "--admin",
        "--fault",
        "status,endpoint=list,status=503,retry_after=1",
    )
    cli.append(proc)
    first = httpx.get(url + "/v1/messages/batches", headers=HEADERS)
    assert first.status_code == 503 and first.headers["retry-after"] == "1"
    assert httpx.get(url + "/v1/messages/batches", headers=HEADERS).status_code == 200
    assert httpx.get(url + "/v1/messages/batches", headers={**HEADERS, "x-api-key": "other"}).status_code == 401
    stats = httpx.get(url + "/_emulator/stats", headers={"x-api-key": "cli-key"}).json()
    assert stats["calls"] == {"list": 2} and stats["rejected"] == {"list": 1}, "the wrong key is refused, not counted"
    code, out, err = stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert out == "", "exactly one line on stdout"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/v1/messages/batches", headers=HEADERS)


def test_console_script_stops_on_sigint(cli: list[subprocess.Popen[str]]) -> None:
    script = Path(sys.executable).parent / "anthropix-emulator"
    if not script.exists():
        pytest.skip("the package is not installed with its console script")
    proc, url = start(command=[str(script)])
    cli.append(proc)
    assert httpx.get(url + "/_emulator/stats").status_code == 404, "admin is off without --admin"
    code, out, _ = stop(proc, signal.SIGINT)
    assert (code, out) == (0, "")


def test_cli_rejects_bad_flags() -> None:
    for args, needle in [
        (["--error-rate", "2"], "error_rate must be between 0 and 1"),
        (["--fault", "explode"], "unknown fault kind"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "airflow_provider_anthropix.emulator", "--port", "0", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2 and needle in done.stderr and done.stdout == ""

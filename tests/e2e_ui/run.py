"""Browser test of the Batches page: a real api-server with the plugin and real users, headless Chromium.

What runs, all on loopback under one throw-away folder: the emulator (``anthropix
emulator``) with a few batches part-way through, ``airflow api-server`` with the simple auth
manager and two users (``op`` with the OP role, ``viewer`` with VIEWER), and Debian's
Chromium driven over the Chrome DevTools protocol (a websocket; ``websockets`` comes with
uvicorn, so nothing is added to the product). The browser:

1. opens the page logged out and sees it refused;
2. logs in as ``viewer`` through Airflow's login form and is refused (403);
3. logs in as ``op``, opens the page, and the test asserts every batch id and its
   progress are on it; a screenshot is kept (``--screenshot``, default
   ``out/e2e-ui/batches-page.png``);
4. opens the same page inside the Airflow UI (the menu entry's route).

Exit status 0 when every check passed; the first failed check is printed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
PASSWORDS = {"op": "op-password-e2e", "viewer": "viewer-password-e2e"}
EMULATOR_KEY = "sk-ant-e2e-ui-key"
_T0 = time.monotonic()


class Failed(AssertionError):
    """A check failed; the message says which and what was seen."""


def say(message: str) -> None:
    print(f"[e2e-ui {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception:  # not up yet
            value = None
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


class Processes:
    """Started in their own session each, stopped as whole process groups."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


class Browser:
    """One headless Chromium page, spoken to over the DevTools websocket."""

    def __init__(self, chromium: str, profile: Path, processes: Processes) -> None:
        argv = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1500,900",
            "about:blank",
        ]
        processes.start("chromium", argv, dict(os.environ))
        # Chromium writes the port it picked into the profile once DevTools listens.
        port_file = profile / "DevToolsActivePort"
        port = int(wait_for("Chromium's DevTools port", lambda: port_file.read_text().split()[0], 60))
        pages = wait_for(
            "a page target",
            lambda: [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"],
            30,
        )
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=64 << 20, open_timeout=30)
        )
        self.ids = itertools.count(1)
        self.call("Page.enable")
        self.call("Network.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1500, height=900, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise Failed(f"{method}: {message['error']}")
                return dict(message.get("result") or {})

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise Failed(f"script failed: {expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        wait_for(f"{url} to load", lambda: self.js("document.readyState") == "complete", 60)

    def text(self) -> str:
        return str(self.js("document.body ? document.body.innerText : ''"))

    def type_into(self, selector: str, text: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def clear_cookies(self) -> None:
        self.call("Network.clearBrowserCookies")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()


def ensure_chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    say("installing Debian's chromium (apt-get)")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which("chromium")
    if not found:
        raise Failed("apt-get installed chromium, but there is no chromium on PATH")
    return found


def create_batches(emulator_url: str) -> list[str]:
    headers = {"x-api-key": EMULATOR_KEY, "anthropic-version": "2026-10-21"}
    ids = []
    with httpx.Client(base_url=emulator_url, headers=headers, timeout=30) as http:
        for size in (40, 120, 400):
            body = {
                "requests": [
                    {
                        "custom_id": f"q-{i}",
                        "params": {
                            "model": "claude-haiku-4-5",
                            "max_tokens": 16,
                            "messages": [{"role": "user", "content": f"question {i}"}],
                        },
                    }
                    for i in range(size)
                ]
            }
            answer = http.post("/v1/messages/batches", json=body)
            answer.raise_for_status()
            ids.append(str(answer.json()["id"]))
        # one canceled, so the page shows an ended batch with its counts next to running ones
        http.post(f"/v1/messages/batches/{ids[0]}/cancel").raise_for_status()
    return ids


def login(browser: Browser, base: str, user: str, next_path: str) -> None:
    browser.clear_cookies()
    browser.goto(f"{base}/auth/login/?next={next_path}")
    wait_for("the login form", lambda: browser.js("!!document.querySelector('input[type=password]')"), 60)
    browser.type_into("input[name=username]", user)
    browser.type_into("input[type=password]", PASSWORDS[user])
    browser.js("document.querySelector('button[type=submit]').click()")
    wait_for(f"{user} to be logged in", lambda: browser.js("location.pathname") == next_path, 60)
    wait_for("the page to load", lambda: browser.js("document.readyState") == "complete", 60)


def run(work: Path, screenshot: Path, docs_image: Path | None) -> None:
    chromium = ensure_chromium()
    home = work / "airflow"
    home.mkdir(parents=True)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    processes = Processes(work)
    browser: Browser | None = None
    try:
        emulator = processes.start(
            "emulator",
            [
                str(BIN / "anthropix"),
                "emulator",
                "--port",
                "0",
                "--api-key",
                EMULATOR_KEY,
                "--processing-seconds",
                "240",
            ],
            dict(os.environ),
        )
        log = work / "emulator.log"
        line = wait_for("the emulator", lambda: re.search(r"listening on (http://\S+)", log.read_text()), 30)
        emulator_url = line.group(1)
        if emulator.poll() is not None:
            raise Failed("the emulator exited")
        batch_ids = create_batches(emulator_url)
        say(f"emulator at {emulator_url} with batches {', '.join(batch_ids)}")

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "op:op,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(48).hex(),
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW_CONN_ANTHROPIX_DEFAULT": json.dumps(
                {"conn_type": "anthropix", "host": emulator_url, "password": EMULATOR_KEY}
            ),
        }
        say("migrating the metadata database")
        subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
        processes.start(
            "api-server",
            [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env,
        )
        wait_for("the api-server", lambda: httpx.get(f"{base}/api/v2/monitor/health").status_code == 200, 180, 1)
        say(f"api-server at {base}")

        browser = Browser(chromium, work / "profile", processes)
        page = "/anthropix/batches"

        browser.goto(base + page)
        if "Not authenticated" not in browser.text():
            raise Failed(f"a logged-out visitor saw the page: {browser.text()[:300]!r}")
        say("logged out: refused")

        login(browser, base, "viewer", page)
        if "You may not see connections" not in browser.text():
            raise Failed(f"the viewer was not refused: {browser.text()[:300]!r}")
        say("viewer: refused")

        login(browser, base, "op", page)
        text = browser.text()
        missing = [b for b in batch_ids if b not in text]
        if missing:
            raise Failed(f"batch ids missing from the page: {missing}; page text: {text[:500]!r}")
        bars = browser.js("document.querySelectorAll('[role=progressbar]').length")
        if bars != len(batch_ids):
            raise Failed(f"expected {len(batch_ids)} progress bars, found {bars}")
        shown = browser.js("[...document.querySelectorAll('.pct')].map(e => e.textContent)")
        if not all(re.fullmatch(r"\d{1,3}%", str(p)) for p in shown):
            raise Failed(f"progress percentages look wrong: {shown}")
        for size in ("/40", "/120", "/400"):
            if size not in text:
                raise Failed(f"the request counts ({size}) are not on the page")
        browser.screenshot(screenshot)
        say(f"op: page shows {len(batch_ids)} batches with progress {shown}; screenshot {screenshot}")

        browser.goto(f"{base}/plugin/anthropix-batches")
        wait_for(
            "the page inside the Airflow UI",
            lambda: browser.js(
                "[...document.querySelectorAll('iframe')].some(f => f.src.includes('/anthropix/batches'))"
            ),
            60,
        )
        time.sleep(2)  # let the UI's own assets settle before the picture
        embedded = screenshot.with_name(screenshot.stem + "-in-airflow.png")
        browser.screenshot(embedded)
        say(f"the menu entry's route embeds the page; screenshot {embedded}")
        if docs_image is not None:
            docs_image.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(embedded, docs_image)
            say(f"copied to {docs_image}")
    finally:
        if browser is not None:
            browser.close()
        processes.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--screenshot", type=Path, default=REPO / "out" / "e2e-ui" / "batches-page.png")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs) afterwards")
    parser.add_argument(
        "--docs-image",
        type=Path,
        default=None,
        help="also copy the in-Airflow screenshot here (docs/img/batches-page.png)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="anthropix-e2e-ui-"))
    try:
        run(work, args.screenshot.resolve(), args.docs_image.resolve() if args.docs_image else None)
    except (Failed, subprocess.CalledProcessError) as exc:
        print(f"e2e-ui FAILED: {exc}\nlogs in {work}", file=sys.stderr)
        return 1
    if args.keep:
        say(f"logs in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

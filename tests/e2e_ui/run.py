"""Browser test of the Batches page: a real api-server with the plugin and real users, headless Chromium.

What runs, all on loopback under one throw-away folder: the emulator (``anthropix
emulator``) with a few batches part-way through, ``airflow api-server`` with the simple auth
manager and two users (``op`` with the OP role, ``viewer`` with VIEWER), and Debian's
Chromium driven over the Chrome DevTools protocol (a websocket; ``websockets`` comes with
uvicorn, so nothing is added to the product). The browser:

1. opens the page logged out and sees it refused;
2. logs in as ``viewer`` through Airflow's login form and is refused (403);
3. logs in as ``op``, opens the page, and the test asserts every batch id and its
   progress are on it, and that the table fits the window (no horizontal overflow, no
   column cut off); a screenshot is kept (``--screenshot``, default
   ``out/e2e-ui/batches-page.png``);
4. opens one batch's detail page, with the same width check;
5. opens the same list inside the Airflow UI (the menu entry's route), where the page sits
   in a frame beside Airflow's navigation, and checks the width there too.

The window is 1,280 x 800, a common laptop screen. Screenshots go under ``out/`` (ignored
by git), never over the documentation's picture. Exit status 0 when every check passed;
the first failed check is printed.
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
#: The browser window: a 1,280-pixel-wide laptop screen; the page must fit it without scrolling sideways.
WIDTH, HEIGHT = 1280, 800
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
            f"--window-size={WIDTH},{HEIGHT}",
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
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

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


#: In the page's document (``doc``, ``win``): how far it overflows the window sideways, and the columns cut off.
_FIT = """
((doc, win) => {
  const width = win.innerWidth;
  const cut = [...doc.querySelectorAll("table th, table td, dl")]
    .filter(e => e.getBoundingClientRect().right > width + 0.5)
    .map(e => e.tagName + ":" + e.textContent.trim().slice(0, 30));
  return {width, scroll: doc.documentElement.scrollWidth, cut: [...new Set(cut)].slice(0, 8),
          tables: doc.querySelectorAll("table").length};
})
"""


def check_fits(browser: Browser, where: str, frame: bool = False) -> dict[str, Any]:
    """The page's content fits its window: nothing to scroll to sideways and no cell past the right edge."""
    target = (
        "(() => { const f = [...document.querySelectorAll('iframe')].find(f => f.src.includes('/anthropix/'));"
        " return [f.contentDocument, f.contentWindow]; })()"
        if frame
        else "[document, window]"
    )
    seen = browser.js(f"{_FIT}(...{target})")
    if not isinstance(seen, dict):
        raise Failed(f"{where}: could not measure the page ({seen!r})")
    if seen["scroll"] > seen["width"] or seen["cut"]:
        raise Failed(
            f"{where}: the page is {seen['scroll']} px wide in a {seen['width']} px window; cut off: {seen['cut']}"
        )
    return dict(seen)


def worst_case_list(path: Path) -> None:
    """The list as a busy deployment fills it: six-figure counts, every outcome, a 214-batch job with long
    DAG, run and task ids, a five-figure cost. The e2e emulator's batches leave those columns empty."""
    from airflow_provider_anthropix.plugins import templates

    row = {
        "id": "msgbatch_011R2c1JeAnYT0000000000000I",
        "processing_status": "in_progress",
        "percent": 99,
        "done": 99_992,
        "total": 100_000,
        "request_counts": {"processing": 8, "succeeded": 97_000, "errored": 992, "canceled": 2_000, "expired": 0},
        "created_at": "2026-12-01T23:11:00Z",
        "ended_at": None,
        "expires_at": "2026-12-02T23:11:00Z",
        "dag_id": "nightly_llm_enrichment_of_customer_tickets",
        "run_id": "scheduled__2026-12-01T23:00:00.123456+00:00",
        "task_id": "answer_every_ticket_with_claude",
        "map_index": 12,
        "made_by": "job",
        "job_batches": 214,
        "cost_usd": 12_345.6789,
        "estimate_usd": 13_000.0,
        "cost_scope": "job",
    }
    sections = [{"conn_id": "anthropix_production_workspace", "error": None, "batches": [row] * 3}]
    html = (
        templates.environment()
        .get_template("list")
        .render(title="Batches", sections=sections, prefix="/anthropix", ui="", limit=20, refresh=None)
    )
    path.write_text(html)


def run(work: Path, screenshot: Path) -> None:
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
        fit = check_fits(browser, "the list")
        if fit["tables"] < 1:
            raise Failed("the list has no table")
        browser.screenshot(screenshot)
        say(f"op: page shows {len(batch_ids)} batches with progress {shown}; fits {fit['width']} px; {screenshot}")

        browser.goto(f"{base}{page}/anthropix_default/{batch_ids[0]}")
        detail = browser.text()
        for needed in (batch_ids[0], "Results downloadable until", "Errors by type", "Estimated cost", "Actual cost"):
            if needed not in detail:
                raise Failed(f"the detail page lacks {needed!r}: {detail[:400]!r}")
        check_fits(browser, "the detail page")
        browser.screenshot(screenshot.with_name(screenshot.stem + "-detail.png"))
        say("the detail page fits")

        browser.goto(f"{base}/plugin/anthropix-batches")
        wait_for(
            "the page inside the Airflow UI",
            lambda: browser.js(
                "[...document.querySelectorAll('iframe')].some(f => f.src.includes('/anthropix/batches'))"
            ),
            60,
        )
        wait_for(
            "the embedded list to load",
            lambda: browser.js(
                "[...document.querySelectorAll('iframe')].some(f => f.src.includes('/anthropix/batches')"
                " && f.contentDocument && f.contentDocument.querySelector('table'))"
            ),
            60,
        )
        time.sleep(2)  # let the UI's own assets settle before the picture
        fit = check_fits(browser, "the list inside the Airflow UI", frame=True)
        embedded = screenshot.with_name(screenshot.stem + "-in-airflow.png")
        browser.screenshot(embedded)
        say(f"the menu entry's route embeds the page; it fits its {fit['width']} px frame; screenshot {embedded}")

        # The same frame width, with every column as full as real DAG runs make it.
        worst = work / "worst-case-list.html"
        worst_case_list(worst)
        browser.call(
            "Emulation.setDeviceMetricsOverride", width=fit["width"], height=HEIGHT, deviceScaleFactor=1, mobile=False
        )
        browser.goto(worst.as_uri())
        check_fits(browser, f"a worst-case list in the {fit['width']} px frame")
        browser.screenshot(screenshot.with_name(screenshot.stem + "-worst-case.png"))
        say(f"a worst-case list (long ids, a job, every outcome) fits {fit['width']} px too")
    finally:
        if browser is not None:
            browser.close()
        processes.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--screenshot", type=Path, default=REPO / "out" / "e2e-ui" / "batches-page.png")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs) afterwards")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="anthropix-e2e-ui-"))
    try:
        run(work, args.screenshot.resolve())
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

"""A throw-away Airflow 3 deployment on loopback: emulator, proxy, and the four Airflow services.

Everything lives under one run directory (``AIRFLOW_HOME``, DAGs folder, process logs,
results) and every process is started in its own session, so stopping one means signalling
its whole process group: the scheduler's LocalExecutor workers and task processes, the
dag-processor's parsers and the api-server's uvicorn workers go with it. The pids are also
written to ``<run_dir>/pids`` so that the shell entry point's ``trap`` can stop them if this
Python process itself is killed.

Database: SQLite. Airflow 3.3 has no executor/database compatibility check (the only
SQLite check in ``airflow/configuration.py`` is the library version >= 3.15), its own
``airflow standalone`` runs LocalExecutor on SQLite, and since Airflow 3 task processes no
longer open the metadata database (they talk to the api-server's Execution API), the only
writers are the four long-running services. See docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy import Proxy
from statsd_listener import StatsdListener

VENV_BIN = Path(sys.executable).parent
AIRFLOW = str(VENV_BIN / "airflow")
SERVICES = ("api-server", "dag-processor", "scheduler", "triggerer")
_LISTENING_RE = re.compile(r"Anthropix emulator listening on (http://\S+)")


class E2EFailure(AssertionError):
    """A check of the end-to-end run failed; the message says which and what was seen."""


def free_port() -> int:
    """A port nothing listens on right now (loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(message: str) -> None:
    """Progress line on stderr with a timestamp relative to the start of the run."""
    print(f"[e2e {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


_T0 = time.monotonic()


def local_path(uri: str) -> Path:
    """A ``file://`` URI or a plain path as a local path."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(unquote(parts.path if parts.scheme else uri))
    raise E2EFailure(f"the e2e run writes to local files only; got {uri!r}")


@dataclass
class Service:
    """One child process, started in its own session, logging to ``log_path``."""

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str]
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None
    expected_exit: bool = False
    generation: int = 0
    #: how long :meth:`stop` waits for a clean exit before SIGKILL
    stop_timeout: float = 15.0

    def start(self) -> None:
        self.generation += 1
        self.expected_exit = False
        log = self.log_path.open("ab")
        shown = " ".join(
            "***" if prev == "--api-key" else arg for prev, arg in zip(["", *self.argv], self.argv, strict=False)
        )
        log.write(f"\n===== start #{self.generation}: {shown}\n".encode())
        log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(self.env),
            cwd=str(self.cwd) if self.cwd else None,
            start_new_session=True,
            **self.popen_kwargs(),
        )
        log.close()

    def popen_kwargs(self) -> dict[str, Any]:
        """More arguments for ``subprocess.Popen`` (a subclass's user and group)."""
        return {}

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float | None = None) -> None:
        """Ask for a clean stop (:meth:`request_stop`), then SIGKILL what is left after ``timeout``."""
        if self.popen is None:
            return
        self.expected_exit = True
        if self.popen.poll() is None:
            self.request_stop(self.stop_timeout if timeout is None else timeout)
        # Children (task processes, parsers, uvicorn workers) may outlive the leader.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def request_stop(self, timeout: float) -> None:
        """SIGTERM the process group and wait up to ``timeout`` for the leader to exit."""
        assert self.popen is not None
        self.signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as an OOM killer or a lost VM would."""
        self.expected_exit = True
        self.signal_group(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Deployment:
    """Emulator + proxy + Airflow services under ``run_dir``.

    The steps of :meth:`start` and the pieces of the environment are methods, so that a larger
    deployment (``tests/e2e_cluster/cluster.py``) adds its parts by overriding them.

    :param run_dir: an empty directory owned by this run.
    :param api_key: the fake API key the emulator accepts and the connection carries.
    :param dag_files: files copied into the DAGs folder.
    :param processing_seconds: how long each emulated batch takes to end.
    :param extra_env: more environment for every Airflow process.
    """

    #: the Airflow processes, in start order (they are stopped in the reverse order)
    airflow_services: ClassVar[tuple[str, ...]] = SERVICES
    triggerers: ClassVar[tuple[str, ...]] = ("triggerer",)
    #: what runs the Airflow processes
    service_class: ClassVar[type[Service]] = Service
    migrate_timeout: ClassVar[float] = 240

    run_dir: Path
    api_key: str
    dag_files: list[Path]
    processing_seconds: float = 10.0
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    proxy: Proxy | None = None
    #: receives every Airflow process's metrics (``anthropix.*`` among them) for the final check
    statsd: StatsdListener = field(default_factory=StatsdListener)
    emulator_url: str = ""
    api_url: str = ""
    _token: str = ""
    #: one api secret and JWT secret for every process (the api-server checks the others' tokens)
    shared_secrets: dict[str, str] = field(
        default_factory=lambda: {
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        }
    )

    # -- layout ------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.run_dir / "airflow-home"

    @property
    def dags_dir(self) -> Path:
        return self.run_dir / "dags"

    @property
    def out_dir(self) -> Path:
        return self.run_dir / "out"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "process-logs"

    @property
    def pylib_dir(self) -> Path:
        return self.run_dir / "pylib"

    @property
    def task_logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def conn_url(self) -> str:
        """The base URL Airflow's connection points at (the proxy in front of the emulator)."""
        assert self.proxy is not None
        return self.proxy.url

    def layout(self) -> list[Path]:
        """The folders :meth:`prepare` creates."""
        return [self.home, self.dags_dir, self.out_dir, self.logs_dir, self.pylib_dir]

    def pylib_modules(self) -> dict[str, str]:
        """Modules written to ``pylib_dir`` (on every Airflow process's ``PYTHONPATH``): file name -> source."""
        return {
            "anthropix_e2e_db.py": '"""SQLite connect arguments of the e2e deployment."""\n\nCONNECT_ARGS = {"timeout": 60}\n'
        }

    def _write_pids(self) -> None:
        lines = [f"{s.pid} {s.name}" for s in self.services.values() if s.pid is not None and s.alive()]
        (self.run_dir / "pids").write_text("\n".join(lines) + ("\n" if lines else ""))

    # -- environment ---------------------------------------------------------------------------
    def airflow_env(self) -> dict[str, str]:
        """Environment of every Airflow process: hermetic, loopback only, fast intervals."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
        env.update(
            {
                "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_dir),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                # No fernet key: trigger kwargs and connection fields are stored as plain text,
                # so the secret scan of the database file sees them as they are.
                "AIRFLOW__CORE__FERNET_KEY": "",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": self.api_url.rsplit(":", 1)[1],
                "AIRFLOW__API__BASE_URL": self.api_url,
                **self.shared_secrets,
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                # A SIGKILLed triggerer's triggers move to a live one once its heartbeat is this old.
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                **self.database_env(),
                "PYTHONPATH": os.pathsep.join(p for p in (str(self.pylib_dir), env.get("PYTHONPATH", "")) if p),
                "AIRFLOW_CONN_ANTHROPIX_DEFAULT": json.dumps(
                    {
                        "conn_type": "anthropix",
                        "password": self.api_key,
                        "host": self.conn_url,
                        "extra": {"max_retries": 4},
                    }
                ),
                "ANTHROPIX_E2E_OUT": str(self.out_dir),
                "ANTHROPIX_NIGHTLY_OUTPUT": (self.out_dir / "nightly-default").as_uri(),
                "ANTHROPIX_NIGHTLY_POLL_INTERVAL": "2",
                # The batch-job example runs only when a scenario triggers it (its batches must not
                # land in the middle of another scenario's count).
                "ANTHROPIX_JOB_SCHEDULE": "",
                # Nor the table example: the e2e scenarios count every batch the emulator sees.
                "ANTHROPIX_TABLE_SCHEDULE": "",
                "ANTHROPIX_JOB_OUTPUT": (self.out_dir / "large-job-default").as_uri(),
                "ANTHROPIX_JOB_POLL_INTERVAL": "2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.statsd.env())
        env.update(self.extra_env)
        return env

    def database_env(self) -> dict[str, str]:
        """The metadata database's settings (here: SQLite in ``AIRFLOW_HOME``, Airflow's default)."""
        # SQLite's default busy timeout is 5 s; four services writing on a loaded 2-core box
        # can hold the lock longer than that ("database is locked" -> HTTP 500).
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "anthropix_e2e_db.CONNECT_ARGS",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "anthropix_e2e_db.CONNECT_ARGS",
        }

    def database_label(self) -> str:
        return f"SQLite at {self.db_path}"

    def service_env(self, name: str) -> dict[str, str]:
        """The environment of the Airflow process ``name`` (and of ``airflow db migrate`` for the api-server)."""
        return self.airflow_env()

    def service_cwd(self, name: str) -> Path | None:
        """The working directory of the Airflow process ``name`` (None: this process's)."""
        return None

    def airflow_argv(self, name: str) -> list[str]:
        """The command line of the Airflow process ``name``."""
        if name == "api-server":
            port = self.api_url.rsplit(":", 1)[1]
            return [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", port, "--workers", "1"]
        if name == "dag-processor":
            return [AIRFLOW, "dag-processor"]
        if name == "scheduler":
            return [AIRFLOW, "scheduler", "--skip-serve-logs"]
        if name in self.triggerers:
            return [AIRFLOW, "triggerer", "--skip-serve-logs"]
        raise KeyError(f"no command line for {name!r}")

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        self.prepare()
        self.start_backends()
        self._start_emulator()
        upstream = self.emulator_url.removeprefix("http://")
        host, port = upstream.rsplit(":", 1)
        self.proxy = Proxy(host, int(port)).start()
        say(f"emulator {self.emulator_url}, proxy {self.proxy.url}")
        self.api_url = f"http://127.0.0.1:{free_port()}"
        self.migrate()
        for name in self.airflow_services:
            service = self.service_class(
                name,
                self.airflow_argv(name),
                self.logs_dir / f"{name}.log",
                self.service_env(name),
                cwd=self.service_cwd(name),
            )
            self.services[name] = service
            service.start()
        self._write_pids()
        self.wait_healthy()

    def prepare(self) -> None:
        """The run directory: its folders, the helper modules and the DAG files."""
        for d in self.layout():
            d.mkdir(parents=True, exist_ok=True)
        for module, source in self.pylib_modules().items():
            (self.pylib_dir / module).write_text(source)
        for f in self.dag_files:
            if f.is_dir():
                shutil.copytree(f, self.dags_dir / f.name, dirs_exist_ok=True)
            else:
                shutil.copy2(f, self.dags_dir / f.name)

    def start_backends(self) -> None:
        """Servers Airflow needs before ``airflow db migrate`` (none here: SQLite is a file)."""

    def migrate(self) -> None:
        t = time.monotonic()
        migrate = subprocess.run(
            [AIRFLOW, "db", "migrate"],
            env=self.service_env("api-server"),
            cwd=self.service_cwd("api-server"),
            stdout=(self.logs_dir / "db-migrate.log").open("wb"),
            stderr=subprocess.STDOUT,
            timeout=self.migrate_timeout,
            check=False,
        )
        if migrate.returncode != 0:
            raise E2EFailure(
                f"airflow db migrate failed ({migrate.returncode}):\n"
                + (self.logs_dir / "db-migrate.log").read_text(errors="replace")[-4000:]
            )
        say(f"database migrated in {time.monotonic() - t:.1f}s ({self.database_label()})")

    def _start_emulator(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "airflow_provider_anthropix.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin",
            "--api-key",
            self.api_key,
            "--processing-seconds",
            str(self.processing_seconds),
            "--seed",
            "7",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        service = Service("emulator", argv, self.logs_dir / "emulator.log", env)
        self.services["emulator"] = service
        service.start()
        self._write_pids()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = _LISTENING_RE.search(service.log_path.read_text(errors="replace"))
            if match:
                self.emulator_url = match.group(1)
                return
            if not service.alive():
                break
            time.sleep(0.05)
        raise E2EFailure(f"the emulator did not start:\n{service.tail()}")

    # -- health and failure reporting ------------------------------------------------------
    def check_processes(self) -> None:
        """Call :meth:`on_unexpected_exit` for every service that died without being asked to."""
        for service in list(self.services.values()):
            if service.popen is not None and not service.expected_exit and service.popen.poll() is not None:
                self.on_unexpected_exit(service)

    def on_unexpected_exit(self, service: Service) -> None:
        """Fail at once, with the service's log."""
        assert service.popen is not None
        raise E2EFailure(
            f"{service.name} exited unexpectedly with status {service.popen.returncode}:\n{service.tail(80)}"
        )

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
        """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            self.check_processes()
            try:
                value = check()
                if value:
                    return value
            except (requests.RequestException, ValueError, KeyError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                detail = f" (last error: {last_error!r})" if last_error else ""
                raise E2EFailure(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
            time.sleep(interval)

    def health(self) -> dict[str, Any]:
        response = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def healthy(self, *components: str) -> bool:
        data = self.health()
        names = components or ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((data.get(name) or {}).get("status") == "healthy" for name in names)

    def wait_healthy(self, *components: str, timeout: float = 120) -> None:
        t = time.monotonic()
        self.wait_for("the api-server to answer", lambda: self.health() is not None, timeout)
        self.wait_for(f"healthy {', '.join(components) or 'services'}", lambda: self.healthy(*components), timeout)
        say(f"services healthy after {time.monotonic() - t:.1f}s")

    def dump_failure(self, extra_tasks: list[tuple[str, str]] | None = None) -> str:
        """Logs a person needs to see why a run failed: service tails and failed task logs."""
        parts = []
        for service in self.services.values():
            parts.append(f"----- {service.name} (pid {service.pid}, alive={service.alive()}) -----\n{service.tail(40)}")
        # The latest task logs.
        task_logs = sorted(self.task_logs_dir.rglob("*.log"), key=lambda p: p.stat().st_mtime)
        for path in task_logs[-8:]:
            text = path.read_text(errors="replace").splitlines()
            parts.append(f"----- task log {path.relative_to(self.task_logs_dir)} -----\n" + "\n".join(text[-40:]))
        return "\n".join(parts)

    def triggerer_mentions(self, text: str) -> int:
        """How many times the triggerers' logs (process logs and trigger logs) mention ``text``."""
        count = sum(self.services[n].log_path.read_text(errors="replace").count(text) for n in self.triggerers)
        return count + self.triggerer_log_count(text)

    def triggerer_log_count(self, text: str) -> int:
        """Occurrences of ``text`` in the trigger logs written under the task log folder."""
        return sum(path.read_text(errors="replace").count(text) for path in self.task_logs_dir.rglob("*.log.trigger.*"))

    def proxy_refuse(self) -> None:
        assert self.proxy is not None
        self.proxy.refuse()

    def proxy_accept(self) -> None:
        assert self.proxy is not None
        self.proxy.accept()

    # -- services ------------------------------------------------------------------------------
    def kill_service(self, name: str) -> None:
        say(f"SIGKILL {name} (process group {self.services[name].pid})")
        self.services[name].kill()
        self._write_pids()

    def restart_service(self, name: str) -> None:
        service = self.services[name]
        if service.alive():
            service.stop()
        service.start()
        self._write_pids()
        say(f"started a new {name} (pid {service.pid})")

    def stop(self) -> None:
        """Stop every service (reverse start order: Airflow, the emulator, the backends) and the proxy.

        Safe to call twice.
        """
        for name in reversed(list(self.services)):
            self.services[name].stop()
        self._write_pids()
        if self.proxy is not None:
            self.proxy.stop()
        self.statsd.stop()

    # -- REST API ------------------------------------------------------------------------------
    def token(self) -> str:
        """A JWT from the SimpleAuthManager's no-credentials endpoint (all-admins mode)."""
        if not self._token:
            response = requests.get(f"{self.api_url}/auth/token", timeout=10)
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One REST call; a 5xx "Database error" (SQLite busy) is retried up to 3 times.

        Only calls that are safe to repeat are made through here: reads, PATCH to a fixed
        state, and POST of a DAG run with a run id chosen by the caller.
        """
        headers = {"Authorization": f"Bearer {self.token()}"}
        for attempt in range(4):
            response = requests.request(method, f"{self.api_url}/api/v2{path}", headers=headers, timeout=90, **kwargs)
            if response.status_code < 500 or attempt == 3:
                return response
            say(f"{method} {path} -> HTTP {response.status_code} ({response.text[:120]}); retrying")
            time.sleep(2)
        return response

    def api_json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api(method, path, **kwargs)
        if response.status_code >= 400:
            raise E2EFailure(f"{method} {path} -> HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    def wait_dag(self, dag_id: str, timeout: float = 120) -> None:
        def parsed() -> bool:
            response = self.api("GET", f"/dags/{dag_id}")
            if response.status_code == 404:
                return False
            response.raise_for_status()
            return True

        self.wait_for(f"DAG {dag_id} to be parsed", parsed, timeout, interval=1.0)
        self.api_json("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        run_id: str | None = None,
        logical_date: str | None = None,
    ) -> str:
        run_id = run_id or f"e2e__{time.strftime('%Y%m%dT%H%M%S')}__{secrets.token_hex(3)}"
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}, "dag_run_id": run_id}
        response = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
        if response.status_code == 409:  # a retried POST whose first attempt had landed
            data = self.api_json("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        elif response.status_code >= 400:
            raise E2EFailure(f"triggering {dag_id} -> HTTP {response.status_code}: {response.text[:500]}")
        else:
            data = response.json()
        say(f"triggered {dag_id} run {data['dag_run_id']}")
        return str(data["dag_run_id"])

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api_json("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api_json("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self.api_json("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return list(data["task_instances"])

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.api_json("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        return data

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        """Wait for a terminal state; on failure, raise with the logs a person needs."""
        t = time.monotonic()
        state = self.wait_for(
            f"run {run_id} to finish",
            lambda: s if (s := self.run_state(dag_id, run_id)) in ("success", "failed") else None,
            timeout,
            interval=1.0,
        )
        tis = {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}
        say(f"run {run_id}: {state} in {time.monotonic() - t:.1f}s; tasks {tis}")
        return str(state)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        data = self.api_json(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": "true", "stringify": "false"},
        )
        return data["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        response = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
        )
        response.raise_for_status()
        return response.text

    # -- what the tasks wrote --------------------------------------------------------------------
    def read_bytes(self, uri: str) -> bytes:
        """A file the tasks wrote, by the URI or path they report (here: local files)."""
        path = local_path(uri)
        if not path.is_file():
            raise E2EFailure(f"{uri} does not exist")
        return path.read_bytes()

    # -- emulator admin ------------------------------------------------------------------------
    @property
    def emu_headers(self) -> dict[str, str]:
        """The emulator's admin endpoints take the API key, like its API (a web page cannot send it)."""
        return {"x-api-key": self.api_key}

    def emu_stats(self) -> dict[str, Any]:
        response = requests.get(f"{self.emulator_url}/_emulator/stats", headers=self.emu_headers, timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def emu_attempts(self, custom_id: str) -> int:
        """How many batches of the emulator carried ``custom_id``."""
        response = requests.get(
            f"{self.emulator_url}/_emulator/attempts",
            params={"custom_id": custom_id},
            headers=self.emu_headers,
            timeout=10,
        )
        response.raise_for_status()
        data = response.json()
        return int(data.get("attempts", data) if isinstance(data, dict) else data)

    def emu_fault(self, **fault: Any) -> None:
        response = requests.post(
            f"{self.emulator_url}/_emulator/faults", json=fault, headers=self.emu_headers, timeout=10
        )
        if response.status_code != 200:
            raise E2EFailure(f"arming fault {fault} failed: {response.text}")

    def emu_clear_faults(self) -> None:
        requests.delete(
            f"{self.emulator_url}/_emulator/faults", headers=self.emu_headers, timeout=10
        ).raise_for_status()


D = TypeVar("D", bound=Deployment)


@contextlib.contextmanager
def deployment(kind: type[D], **kwargs: Any) -> Iterator[D]:
    """Start a ``kind`` of :class:`Deployment`, always stop it; SIGTERM/SIGHUP become a clean stop too."""
    dep = kind(**kwargs)

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        dep.start()
        yield dep
    finally:
        dep.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

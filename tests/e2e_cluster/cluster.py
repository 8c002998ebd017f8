"""A production-shaped Airflow 3 deployment on loopback, built on ``tests/e2e/deployment.py``.

PostgreSQL as the metadata database, Redis as the Celery broker, an S3 API server (moto in
server mode) for every file a task hands to another, and Airflow as seven processes:
api-server, scheduler, dag-processor, two triggerers and two Celery workers. Each Airflow
process gets its own "host": a working directory, ``TMPDIR``, ``AIRFLOW_HOME`` and a host
name (``[core] hostname_callable`` reads it from the environment), so nothing can rely on
another process's disk. What is shared is what a cluster shares: the database, the broker,
the object store, the DAG code, and the task-log folder (a shared log volume; remote logging
is the production alternative).

Every process is started in its own session with ``ANTHROPIX_CLUSTER_RUN=<run dir>`` in its
environment, so :meth:`ClusterDeployment.leaked` can find anything that outlived its
process group, even a child that started a session of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from deployment import AIRFLOW, Deployment, E2EFailure, Service, free_port, say

PG_USER = "anthropix-pg"
DB_NAME = "airflow"
BUCKET = "anthropix-cluster"
AWS_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
AIRFLOW_SERVICES = ("api-server", "dag-processor", "scheduler", "triggerer-1", "triggerer-2", "worker-1", "worker-2")
TRIGGERERS = ("triggerer-1", "triggerer-2")
WORKERS = ("worker-1", "worker-2")
RUN_MARKER = "ANTHROPIX_CLUSTER_RUN"
#: The emulator's batches take this long; scenarios end them when they choose by moving its clock.
PROCESSING_SECONDS = 3600.0
#: requests of the batch-job example here (the e2e run keeps its default, 2,500)
JOB_REQUESTS = 1200


def pg_bin_dir() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian layout)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise E2EFailure("no PostgreSQL server under /usr/lib/postgresql/*/bin (scripts/e2e_cluster.sh installs it)")
    return found[-1].parent


@dataclass
class HostService(Service):
    """A :class:`Service` that is a whole "host": its session; optionally run as another Unix user."""

    user: str | None = None
    #: signal for a clean stop of the leader (PostgreSQL: SIGINT is its "fast" shutdown)
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0

    def popen_kwargs(self) -> dict[str, Any]:
        if not self.user:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def signal_group(self, sig: int) -> None:
        """Signal the leader's process group and every other process of its session.

        A Celery worker's task process moves to a process group of its own; signalling only the
        worker's group would leave it running when the "host" dies, which a real host loss never
        does. Every service starts a session of its own, so the session is the host.
        """
        super().signal_group(sig)
        if self.popen is None:
            return
        for pid in session_members(self.popen.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def request_stop(self, timeout: float) -> None:
        """The service's own clean-stop signal to its leader; SIGTERM to the group if that is not enough."""
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, self.stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)


def session_members(sid: int) -> list[int]:
    """Every process whose session id is ``sid`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[3] == str(sid):  # state, ppid, pgrp, session
            members.append(int(entry.name))
    return members


def _proc_env_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@dataclass
class ClusterDeployment(Deployment):
    """PostgreSQL + Redis + moto + emulator/proxy + seven Airflow processes under ``run_dir``.

    :param triggerer_capacity: ``[triggerer] capacity`` of each triggerer (low, so that a load of
        100 waits cannot fit in one and both triggerers must run some).
    :param worker_concurrency: Celery pool size of each worker.
    """

    airflow_services = AIRFLOW_SERVICES
    triggerers = TRIGGERERS
    service_class = HostService
    migrate_timeout = 300

    processing_seconds: float = PROCESSING_SECONDS
    triggerer_capacity: int = 60
    worker_concurrency: int = 4
    pg_port: int = 0
    redis_port: int = 0
    s3_url: str = ""
    #: restart Airflow services that exit on their own (a process supervisor), and say so
    supervise: bool = False
    supervised_restarts: list[str] = field(default_factory=list)

    # -- layout ------------------------------------------------------------------------------
    @property
    def home(self) -> Path:  # the api-server's host; db migrate runs there too
        return self.host_dir("api-server") / "airflow-home"

    @property
    def task_logs_dir(self) -> Path:
        return self.run_dir / "task-logs"

    @property
    def pg_dir(self) -> Path:
        return self.run_dir / "postgres"

    def host_dir(self, name: str) -> Path:
        return self.run_dir / "hosts" / name

    @property
    def sql_alchemy_conn(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/{DB_NAME}"

    def s3_uri(self, *parts: str) -> str:
        return "s3://" + "/".join([BUCKET, *parts])

    def layout(self) -> list[Path]:
        hosts = [self.host_dir(name) / sub for name in AIRFLOW_SERVICES for sub in ("airflow-home", "tmp")]
        return [self.dags_dir, self.logs_dir, self.pylib_dir, self.task_logs_dir, *hosts]

    def pylib_modules(self) -> dict[str, str]:
        return {
            "anthropix_cluster_host.py": (
                '"""Host name of this process in the cluster test (each process plays a separate host)."""\n\n'
                "import os\n\n\ndef hostname() -> str:\n"
                '    return os.environ.get("ANTHROPIX_CLUSTER_HOST") or os.uname().nodename\n'
            )
        }

    # -- environment ---------------------------------------------------------------------------
    def airflow_env(self) -> dict[str, str]:
        env = super().airflow_env()
        aws_conn = {
            "conn_type": "aws",
            "login": AWS_KEYS["AWS_ACCESS_KEY_ID"],
            "password": AWS_KEYS["AWS_SECRET_ACCESS_KEY"],
            "extra": {"endpoint_url": self.s3_url, "region_name": AWS_KEYS["AWS_DEFAULT_REGION"]},
        }
        env.update(
            {
                RUN_MARKER: str(self.run_dir),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "64",
                "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "256",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "anthropix_cluster_host.hostname",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.sql_alchemy_conn}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.task_logs_dir),
                # Recovery timers, low so that recovery is seen in seconds (production: 30 / 300 / 600).
                "AIRFLOW__TRIGGERER__CAPACITY": str(self.triggerer_capacity),
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "90",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
                "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_conn),
                "ANTHROPIX_E2E_OUT": self.s3_uri("e2e-out"),
                "ANTHROPIX_NIGHTLY_OUTPUT": self.s3_uri("nightly-default"),
                "ANTHROPIX_JOB_OUTPUT": self.s3_uri("large-job-default"),
                "ANTHROPIX_JOB_REQUESTS": str(JOB_REQUESTS),
                "ANTHROPIX_JOB_BATCH_SIZE": "400",
                "ANTHROPIX_JOB_POLL_INTERVAL": "2",
                # The e2e chaos DAG (tests/e2e/dags/anthropix_e2e_chaos.py) with many runs at once,
                # the sensor's patience with the API raised, and the create checking that S3 takes its
                # results. A broker outage while a task is being queued fails that try at once (the
                # Celery executor retries a publish only on a timeout): the retry delay bridges it.
                "ANTHROPIX_E2E_CHAOS_MAX_ACTIVE_RUNS": "16",
                "ANTHROPIX_E2E_CHAOS_MAX_ACTIVE_TASKS": "64",
                "ANTHROPIX_E2E_CHAOS_RETRY_DELAY": "10",
                "ANTHROPIX_E2E_CHAOS_MAX_POLL_FAILURES": "30",
                "ANTHROPIX_E2E_CHAOS_CHECK_DESTINATION": "1",
                # ObjectStoragePath("s3://...") without a conn_id (the examples) uses boto's default
                # chain: these variables, as an instance role would in production.
                "AWS_ENDPOINT_URL_S3": self.s3_url,
                **AWS_KEYS,
            }
        )
        env.update(self.extra_env)
        return env

    def database_env(self) -> dict[str, str]:
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": self.sql_alchemy_conn.replace("+psycopg2", "+asyncpg"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_PRE_PING": "True",
        }

    def database_label(self) -> str:
        return "PostgreSQL"

    def service_env(self, name: str) -> dict[str, str]:
        """One Airflow process's environment: its own home, temp dir and host name."""
        host = self.host_dir(name)
        env = self.airflow_env()
        env.update(
            {
                "AIRFLOW_HOME": str(host / "airflow-home"),
                "TMPDIR": str(host / "tmp"),
                "ANTHROPIX_CLUSTER_HOST": name,
                "HOME": str(host),
            }
        )
        if name.startswith("worker"):
            # Each worker serves its own logs; the api-server reads the shared log folder first.
            env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
        return env

    def service_cwd(self, name: str) -> Path | None:
        return self.host_dir(name)

    def airflow_argv(self, name: str) -> list[str]:
        if name in WORKERS:
            host = f"w{WORKERS.index(name) + 1}@cluster"
            return [AIRFLOW, "celery", "worker", "--celery-hostname", host, "--skip-serve-logs"]
        return super().airflow_argv(name)

    # -- infrastructure ----------------------------------------------------------------------
    def _start_postgres(self) -> None:
        bin_dir = pg_bin_dir()
        data, sockets = self.pg_dir / "data", self.pg_dir / "sockets"
        for d in (self.pg_dir, data, sockets):
            d.mkdir(parents=True, exist_ok=True)
        user = PG_USER if os.geteuid() == 0 else None
        if user:
            os.chmod(self.run_dir, 0o755)  # the PostgreSQL user must reach its data dir below it
            entry = pwd.getpwnam(user)
            for d in (self.pg_dir, data, sockets):
                os.chown(d, entry.pw_uid, entry.pw_gid)
            os.chmod(data, 0o700)
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            RUN_MARKER: str(self.run_dir),
        }
        t = time.monotonic()
        init = HostService(
            "initdb",
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-sync"],
            self.logs_dir / "initdb.log",
            env,
            cwd=self.pg_dir,
            user=user,
        )
        init.start()
        assert init.popen is not None
        if init.popen.wait(120) != 0:
            raise E2EFailure(f"initdb failed:\n{init.tail()}")
        self.pg_port = free_port()
        argv = [
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.pg_port),
            "-k",
            str(sockets),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            # A throw-away database: durability is not what this test is about.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
        service = HostService(
            "postgres", argv, self.logs_dir / "postgres.log", env, cwd=self.pg_dir, user=user, stop_signal=signal.SIGINT
        )
        self.services["postgres"] = service
        service.start()
        self._write_pids()
        self.wait_postgres(60)
        with contextlib.closing(self.pg_connect("postgres")) as conn:
            conn.autocommit = True
            conn.cursor().execute(f"CREATE DATABASE {DB_NAME}")
        say(
            f"PostgreSQL {bin_dir.parent.name} on 127.0.0.1:{self.pg_port} (user {user or 'current'}) in {time.monotonic() - t:.1f}s"
        )

    def pg_connect(self, db: str = DB_NAME) -> Any:
        return psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="airflow", dbname=db, connect_timeout=5)

    def wait_postgres(self, timeout: float) -> None:
        def ready() -> bool:
            try:
                with contextlib.closing(self.pg_connect("postgres")):
                    return True
            except psycopg2.OperationalError:
                return False

        self.wait_for("PostgreSQL to accept connections", ready, timeout, interval=0.2)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """One read of the metadata database (what the scenarios check against)."""
        with contextlib.closing(self.pg_connect()) as conn, conn.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())

    def _start_redis(self) -> None:
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        data = self.run_dir / "redis"
        data.mkdir(exist_ok=True)
        self.redis_port = free_port()
        argv = [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""]
        argv += ["--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes", "--unixsocket", ""]
        service = HostService("redis", argv, self.logs_dir / "redis.log", {RUN_MARKER: str(self.run_dir)}, cwd=data)
        self.services["redis"] = service
        service.start()
        self._write_pids()
        self.wait_for("Redis to listen", lambda: "Ready to accept connections" in service.log_path.read_text(), 30, 0.1)
        say(f"Redis on 127.0.0.1:{self.redis_port}")

    def _start_s3(self) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
        env[RUN_MARKER] = str(self.run_dir)
        service = HostService("s3", argv, self.logs_dir / "s3.log", env, cwd=self.run_dir)
        self.services["s3"] = service
        service.start()
        self._write_pids()
        self.s3_url = f"http://127.0.0.1:{port}"
        self.wait_for("the S3 server", lambda: requests.get(self.s3_url, timeout=2).status_code < 500, 60, 0.2)
        self.s3().create_bucket(Bucket=BUCKET)
        say(f"S3 API (moto server) on {self.s3_url}, bucket {BUCKET}")

    def s3(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1", **_boto_keys())

    def read_bytes(self, uri: str) -> bytes:
        """An object the tasks wrote (every file of this run lives in the S3 server)."""
        parts = urlsplit(uri)
        if parts.scheme != "s3" or parts.netloc != BUCKET:
            raise E2EFailure(f"expected an object in s3://{BUCKET}/, got {uri!r}")
        client = self.s3()
        try:
            data: bytes = client.get_object(Bucket=BUCKET, Key=parts.path.lstrip("/"))["Body"].read()
        except client.exceptions.NoSuchKey:
            raise E2EFailure(f"{uri} does not exist") from None
        return data

    def s3_keys(self, prefix: str = "") -> list[str]:
        """Every key in the bucket under ``prefix``."""
        client, keys, token = self.s3(), [], None
        while True:
            kwargs: dict[str, Any] = {"Bucket": BUCKET, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = client.list_objects_v2(**kwargs)
            keys += [item["Key"] for item in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return keys

    # -- start ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        # Inherited by every process started from here on (see leaked()).
        os.environ[RUN_MARKER] = str(self.run_dir)
        super().prepare()

    def start_backends(self) -> None:
        self._start_postgres()
        self._start_redis()
        self._start_s3()

    def start(self) -> None:
        super().start()
        self.wait_workers()

    def wait_workers(self, *names: str, timeout: float = 120) -> None:
        """Wait until each Celery worker has logged that it is ready for tasks."""
        for name in names or WORKERS:
            service = self.services[name]
            self.wait_for(
                f"{name} to be ready",
                lambda s=service: " ready." in s.log_path.read_text(errors="replace").rsplit("===== start #", 1)[-1],
                timeout,
            )

    # -- processes -----------------------------------------------------------------------------
    def on_unexpected_exit(self, service: Service) -> None:
        """Fail, or, while supervising, restart the Airflow service and note it."""
        if not (self.supervise and service.name in AIRFLOW_SERVICES):
            super().on_unexpected_exit(service)
            return
        assert service.popen is not None
        note = f"{service.name} exited with status {service.popen.returncode}; supervisor restarted it"
        say(f"supervisor: {note}")
        self.supervised_restarts.append(note)
        service.signal_group(signal.SIGKILL)
        service.start()
        self._write_pids()

    def restart_infra(self, name: str, down_seconds: float, while_down: Callable[[], None] | None = None) -> None:
        """Stop PostgreSQL or Redis cleanly, keep it down ``down_seconds``, start it on the same port."""
        service = self.services[name]
        say(f"stopping {name} (pid {service.pid}) for {down_seconds:.0f}s")
        service.stop()
        self._write_pids()
        if while_down is not None:
            while_down()
        deadline = time.monotonic() + down_seconds
        while time.monotonic() < deadline:
            self.check_processes()
            time.sleep(0.5)
        service.start()
        self._write_pids()
        if name == "postgres":
            self.wait_postgres(60)
        else:
            self.wait_for("Redis to listen", lambda: "Ready to accept" in service.tail(5), 30, 0.1)
        say(f"{name} is back (pid {service.pid})")

    def leaked(self, settle: float = 2.0) -> list[str]:
        """Processes of this run outside every live service (its process group or tree).

        Seen twice ``settle`` seconds apart, so a child that a live service is starting or
        reaping at the moment of the first look is not counted.
        """

        def candidates() -> dict[int, str]:
            live: set[int] = set()
            leaders: set[int] = set()
            for service in self.services.values():
                if service.alive() and service.pid is not None:
                    leaders.add(service.pid)
                    live.update(process_tree(service.pid))
            needle = f"{RUN_MARKER}={self.run_dir}\0".encode()
            found = {}
            for entry in Path("/proc").iterdir():
                pid = int(entry.name) if entry.name.isdigit() else 0
                if not pid or pid in live or pid == os.getpid() or not _proc_env_has(pid, needle):
                    continue
                with contextlib.suppress(OSError):
                    if os.getpgid(pid) in leaders:
                        continue
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found[pid] = cmdline[:160]
            return found

        first = candidates()
        if not first:
            return []
        time.sleep(settle)
        second = candidates()
        return [f"{pid}: {cmd}" for pid, cmd in second.items() if pid in first]

    def service_rss(self, name: str) -> int:
        service = self.services[name]
        return rss_bytes(process_tree(service.pid)) if service.alive() and service.pid else 0

    # -- emulator clock --------------------------------------------------------------------------
    def end_batches(self, quiet: bool = False) -> None:
        """Move the emulator's clock past the processing time: every batch created so far ends."""
        response = requests.post(
            f"{self.emulator_url}/_emulator/clock",
            json={"advance": self.processing_seconds + 1},
            headers=self.emu_headers,
            timeout=10,
        )
        response.raise_for_status()
        if not quiet:
            say(f"emulator clock advanced {self.processing_seconds + 1:.0f}s: every batch so far has ended")


def _boto_keys() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_KEYS["AWS_SECRET_ACCESS_KEY"],
    }

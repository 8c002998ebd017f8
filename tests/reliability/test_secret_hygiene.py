"""The API key never shows up anywhere Airflow keeps or shows things, and never goes to another host.

The shipped example DAG runs in ``dag.test()`` (a real task runner, the trigger run for the
deferred sensor, XCom, rendered fields, the task state store, all in a SQLite metadata DB)
with a recognisable fake key. Then every byte of the Airflow home (the database file and
its journal, every log file), the results written, the captured stdout/stderr, every row of
every table, and the texts of the errors a wrong key or a bad connection produce are
searched for the key and for its random tail: zero occurrences. The same scan runs in the
real deployment (scripts/e2e.sh), over the process logs and the REST API too.

The forged ``results_url`` tests point a batch at a second loopback server that records
what it receives: the key must never reach it, directly or through a redirect.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider_anthropix.api import AsyncClient, ClientConfig, MessageBatch, ResultsHostError, SyncClient
from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor
from tests.support.airflow import migrated_airflow_home
from tests.support.http import QuietHandler
from tests.support.paths import REPO
from tests.support.payloads import ended_batch_json as _ended_batch

CANARY = f"sk-ant-hygiene-LEAKCANARY-{secrets.token_hex(12)}"
TAIL = CANARY.rsplit("-", 1)[1]


def _hits(data: bytes | str) -> int:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return max(data.count(CANARY.encode()), data.count(TAIL.encode()))


def _conn(url: str, key: str = CANARY, **extra: Any) -> str:
    return json.dumps({"conn_type": "anthropix", "password": key, "host": url, "extra": extra})


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A throw-away AIRFLOW_HOME with a migrated SQLite DB, the example DAGs folder copied in."""
    home = tmp_path_factory.mktemp("hygiene_home")
    dags = home / "dags"
    shutil.copytree(REPO / "example_dags", dags / "example_dags")
    # No fernet key: trigger kwargs and fields are stored as plain text, so the scan sees them as stored.
    with migrated_airflow_home(home, dags, AIRFLOW__CORE__FERNET_KEY=""):
        yield home


@pytest.fixture(scope="module")
def canary_emulator() -> Iterator[EmulatorHandle]:
    from airflow_provider_anthropix.emulator import run_emulator

    with run_emulator(api_key=CANARY, processing_seconds=1.0, seed=3) as handle:
        yield handle


def _load_example_dag(home: Path) -> Any:
    path = home / "dags" / "example_dags" / "nightly_batch.py"
    spec = importlib.util.spec_from_file_location("hygiene_nightly_batch", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _scan_tree(root: Path) -> dict[str, int]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and (count := _hits(path.read_bytes())):
            found[str(path.relative_to(root))] = count
    return found


def _scan_tables(db_path: Path) -> tuple[dict[str, int], int]:
    """Every row of every table as text; returns hits per table and the number of rows read."""
    found: dict[str, int] = {}
    rows_read = 0
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            for row in db.execute(f'select * from "{table}"'):
                rows_read += 1
                text = "|".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row)
                if count := _hits(text):
                    found[table] = found.get(table, 0) + count
    return found, rows_read


def test_example_dag_run_leaves_the_key_nowhere(
    airflow_home: Path,
    canary_emulator: EmulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "results"
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", _conn(canary_emulator.url))
    monkeypatch.setenv("ANTHROPIX_NIGHTLY_OUTPUT", out.as_uri())
    monkeypatch.setenv("ANTHROPIX_NIGHTLY_POLL_INTERVAL", "0.3")
    dag = _load_example_dag(airflow_home)
    dag_run = dag.test()
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    assert canary_emulator.stats()["batches_created"] == 1

    captured = capfd.readouterr()
    assert "deferring to the triggerer" in captured.out + captured.err  # the sensor did defer
    assert _hits(captured.out) == 0 and _hits(captured.err) == 0, "the key is in the task/trigger output"
    tables, rows = _scan_tables(airflow_home / "airflow.db")
    assert rows > 20
    assert tables == {}, f"the key is stored in tables {tables}"
    with sqlite3.connect(f"file:{airflow_home / 'airflow.db'}?mode=ro", uri=True) as db:
        kinds = {t for (t,) in db.execute("select name from sqlite_master where type='table'")}
        xcoms = db.execute("select count(*) from xcom").fetchone()[0]
        rendered = db.execute("select count(*) from rendered_task_instance_fields").fetchone()[0]
    assert {"xcom", "trigger", "rendered_task_instance_fields", "task_state_store"} <= kinds
    assert xcoms >= 4 and rendered >= 4  # what was scanned is really there
    assert _scan_tree(airflow_home) == {}, "the key is in a file of the Airflow home (DB bytes, WAL, logs)"
    assert _scan_tree(out) == {}, "the key is in the results written"
    assert any(out.rglob("_manifest.json"))


def test_deferral_trigger_kwargs_hold_no_secret(
    canary_emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", _conn(canary_emulator.url))
    canary_emulator.config.processing_seconds = 3600
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    batch = AnthropixHook().create_batch([{"custom_id": "a", "params": body}])
    sensor = BatchEndedSensor(task_id="wait", batch_id=batch.id, deferrable=True, poll_interval=5)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})  # type: ignore[arg-type]
    classpath, kwargs = deferred.value.trigger.serialize()
    text = json.dumps(kwargs)  # must be plain JSON, as the trigger table stores it
    assert _hits(text) == 0 and _hits(repr(deferred.value.trigger)) == 0
    assert kwargs["batch_id"] == batch.id and classpath.endswith("BatchEndedTrigger")
    rendered = {name: getattr(sensor, name) for name in sensor.template_fields}
    assert _hits(repr(rendered)) == 0
    canary_emulator.config.processing_seconds = 1.0


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("case", "conn"),
    [
        ("wrong key", lambda url: _conn(url, key=CANARY + "x")),
        ("unreachable host", lambda url: _conn("http://127.0.0.1:9", max_retries=0)),
        ("bad version", lambda url: _conn(url, anthropic_version="1999-01-01")),
        ("host with a path", lambda url: _conn(url + "/v1")),
    ],
)
def test_error_texts_do_not_carry_the_key(
    case: str,
    conn: Callable[[str], str],
    canary_emulator: EmulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", conn(canary_emulator.url))
    request = {
        "custom_id": "a",
        "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    }
    attempts: list[Callable[[], Any]] = [
        lambda: CreateBatchOperator(task_id="c", requests=[request]).execute({}),  # type: ignore[arg-type]
        lambda: BatchEndedSensor(task_id="w", batch_id="msgbatch_1", deferrable=True).execute({}),  # type: ignore[arg-type]
        lambda: FetchBatchResultsOperator(task_id="f", batch_id="msgbatch_1", destination=str(tmp_path)).execute({}),  # type: ignore[arg-type]
        lambda: AnthropixHook().test_connection(),
    ]
    texts = []
    for attempt in attempts:
        try:
            texts.append(repr(attempt()))
        except TaskDeferred as deferred:  # a transient failure: the sensor waits in the triggerer
            texts.append(json.dumps(deferred.trigger.serialize()[1]) + repr(deferred.trigger))
        except (AirflowException, AnthropixError) as exc:
            texts.append(f"{exc!s} {exc!r} {exc.args!r} {exc.__cause__!r} {exc.__context__!r}")
    captured = capfd.readouterr()
    assert len(texts) == 4
    for text in [*texts, captured.out, captured.err]:
        assert _hits(text) == 0, f"{case}: the key is in {text[:500]!r}"


class _Recorder(QuietHandler):
    """A loopback server that records every request and answers what ``routes`` say."""

    seen: list[dict[str, str]]
    routes: dict[str, tuple[int, dict[str, str], bytes]]

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        status, headers, body = self.routes.get(self.path.split("?")[0], (404, {}, b"{}"))
        self.reply(status, headers, body)


@pytest.fixture
def recorder() -> Iterator[Callable[[dict[str, tuple[int, dict[str, str], bytes]]], tuple[str, list[dict[str, str]]]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> tuple[str, list[dict[str, str]]]:
        seen: list[dict[str, str]] = []
        handler = type("Handler", (_Recorder,), {"seen": seen, "routes": routes})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.smoke
def test_forged_results_url_never_receives_the_key(
    recorder: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    evil_url, evil_seen = recorder({"/v1/messages/batches/msgbatch_forged/results": (200, {}, b'{"x":1}\n')})
    evil_port = evil_url.rsplit(":", 1)[1]
    forged = [
        f"{evil_url}/v1/messages/batches/msgbatch_forged/results",  # another port on the same host
        f"http://localhost:{evil_port}/v1/messages/batches/msgbatch_forged/results",  # another host name
    ]
    # An API that answers retrieve with a forged results_url, and redirects its own results to the evil server.
    api_url, api_seen = recorder(
        {
            "/v1/messages/batches/msgbatch_forged": (200, {"content-type": "application/json"}, b""),
            "/v1/messages/batches/msgbatch_forged/results": (302, {"location": forged[0]}, b""),
        }
    )
    api_port = api_url.rsplit(":", 1)[1]
    forged += [
        f"http://127.0.0.1:{api_port}@127.0.0.1:{evil_port}/v1/messages/batches/msgbatch_forged/results",  # userinfo
        f"https://127.0.0.1:{api_port}/v1/messages/batches/msgbatch_forged/results",  # other scheme
    ]
    config = ClientConfig(api_key=CANARY, base_url=api_url, max_retries=0)
    with SyncClient(config) as client:
        for url in forged:
            with pytest.raises(ResultsHostError):
                list(client.iter_result_bytes(MessageBatch.from_dict(_ended_batch(url))))
            with pytest.raises(ResultsHostError):
                list(client.iter_result_bytes(url))
        with pytest.raises(AnthropixError):  # a redirect from the API host is not followed
            list(client.iter_result_bytes("msgbatch_forged"))

    async def async_side() -> None:
        async with AsyncClient(config) as aclient:
            for url in forged:
                with pytest.raises(ResultsHostError):
                    async for _ in aclient.iter_result_bytes(MessageBatch.from_dict(_ended_batch(url))):
                        pass
            with pytest.raises(AnthropixError):
                async for _ in aclient.iter_result_bytes("msgbatch_forged"):
                    pass

    asyncio.run(async_side())

    # Through the operator: the API's retrieve names the evil server as results_url.
    api2_url, api2_seen = recorder(_forging_api(forged[0]))
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", _conn(api2_url, max_retries=0))
    fetch = FetchBatchResultsOperator(task_id="f", batch_id="msgbatch_forged", destination=str(tmp_path / "out"))
    with pytest.raises(Exception) as info:
        fetch.execute({})  # type: ignore[arg-type]
    assert "refusing to send the API key" in str(info.value)
    assert _hits(str(info.value)) == 0

    assert evil_seen == [], f"the forged host was contacted: {evil_seen}"
    assert any(r["path"].endswith("/results") for r in api_seen)  # the redirect really was offered
    assert len(api2_seen) == 1
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()], "a refused fetch wrote something"


def _forging_api(results_url: str) -> dict[str, tuple[int, dict[str, str], bytes]]:
    body = json.dumps(_ended_batch(results_url)).encode()
    return {"/v1/messages/batches/msgbatch_forged": (200, {"content-type": "application/json"}, body)}


def test_fetch_refuses_a_forged_results_url_without_retrying(
    recorder: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    evil_url, evil_seen = recorder({})
    api_url, _ = recorder(_forging_api(f"{evil_url}/v1/messages/batches/msgbatch_forged/results"))
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", _conn(api_url, max_retries=0))
    fetch = FetchBatchResultsOperator(task_id="f", batch_id="msgbatch_forged", destination=str(tmp_path / "out"))
    with pytest.raises(AirflowFailException):
        fetch.execute({})  # type: ignore[arg-type]
    assert evil_seen == []

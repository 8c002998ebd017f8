"""The Batches page inside the real api-server app, behind the simple auth manager with real users.

The app is Airflow's own (``create_app``), with plugins loaded through the ``airflow.plugins``
entry point as in a deployment; users log in through ``/auth/token``. Checks: who gets
401/403/200, that a cancel works for OP and is refused cross-origin or form-encoded, and
that the page shows the batches, their progress, the DAG run that made one and its cost.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from tests.support.airflow import migrated_airflow_home

try:
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401

    AIRFLOW_33 = True
except ImportError:  # Airflow 3.2
    AIRFLOW_33 = False
#: ``dag.test()`` on Airflow 3.2 with the pydantic of the lock file fails inside Airflow's
#: Execution API models (as for the lifecycle tests); the page itself is tested on 3.2 too.
needs_dag_test = pytest.mark.skipif(not AIRFLOW_33, reason="dag.test() needs Airflow 3.3 with this lock file")

USERS = {"viewer": "VIEWER", "op": "OP", "admin": "ADMIN"}
PASSWORDS = {name: f"pw-{name}-123" for name in USERS}
DB_CONN = "anthropix_db"


@pytest.fixture(scope="module")
def api_app(
    tmp_path_factory: pytest.TempPathFactory, emulator_server: EmulatorHandle, emulator_api_key: str
) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("plugin_home")
    dags = home / "dags"
    dags.mkdir()
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    env = {
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "test-secret-for-the-plugin-page-" + "0123456789abcdef" * 4,
    }
    with migrated_airflow_home(home, dags, **env):
        from airflow.api_fastapi.app import create_app, purge_cached_app
        from airflow.models import Connection
        from airflow.utils.session import create_session

        with create_session() as session:
            session.add(
                Connection(conn_id=DB_CONN, conn_type="anthropix", host=emulator_server.url, password=emulator_api_key)
            )
        purge_cached_app()
        try:
            yield create_app(apps="core")  # the UI, public API and plugins; the Execution API is not needed
        finally:
            purge_cached_app()


@pytest.fixture(scope="module")
def dags_folder(api_app: Any) -> Path:
    from airflow.configuration import conf

    return Path(conf.get("core", "dags_folder"))


def client_for(app: Any, user: str | None = None) -> Any:
    from fastapi.testclient import TestClient

    client = TestClient(app, base_url="http://testserver")
    if user is not None:
        answer = client.post("/auth/token", json={"username": user, "password": PASSWORDS[user]})
        assert answer.status_code == 201, answer.text
        client.cookies.set("_token", answer.json()["access_token"])
    return client


def create(http: httpx.Client, n: int = 4) -> str:
    body = {
        "requests": [
            {
                "custom_id": f"r{i}",
                "params": {
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "x"}],
                },
            }
            for i in range(n)
        ]
    }
    return str(http.post("/v1/messages/batches", json=body).json()["id"])


PAGE = "/anthropix/batches"


def cancel_url(batch_id: str) -> str:
    return f"/anthropix/api/batches/{DB_CONN}/{batch_id}/cancel"


def status_of(http: httpx.Client, batch_id: str) -> str:
    return str(http.get(f"/v1/messages/batches/{batch_id}").json()["processing_status"])


@pytest.fixture
def running(emulator: EmulatorHandle, emulator_http: httpx.Client) -> str:
    emulator.config.processing_seconds = 3600
    return create(emulator_http)


@pytest.mark.smoke
def test_plugin_is_loaded_through_the_entry_point(api_app: Any) -> None:
    from airflow import plugins_manager

    info = {p["name"]: p for p in plugins_manager.get_plugin_info()}
    assert "anthropix" in info
    assert "airflow-provider-anthropix" in str(info["anthropix"]["source"])  # the entry point's distribution
    fastapi_apps, _ = plugins_manager.get_fastapi_plugins()
    assert any(a["url_prefix"] == "/anthropix" for a in fastapi_apps)
    views, _ = plugins_manager._get_ui_plugins()
    assert any(v["href"] == PAGE and v["destination"] == "nav" for v in views)


@pytest.mark.smoke
def test_logged_out_gets_401(api_app: Any, running: str, emulator_http: httpx.Client) -> None:
    client = client_for(api_app)
    assert client.get(PAGE).status_code == 401
    assert client.get("/anthropix/api/batches").status_code == 401
    assert client.get(f"/anthropix/batches/{DB_CONN}/{running}").status_code == 401
    answer = client.post(cancel_url(running), json={}, headers={"Origin": "http://testserver"})
    assert answer.status_code == 401
    assert status_of(emulator_http, running) == "in_progress"


@pytest.mark.smoke
def test_a_forged_token_gets_403(api_app: Any, running: str) -> None:
    client = client_for(api_app)
    client.cookies.set("_token", "not.a.jwt")
    assert client.get(PAGE).status_code == 403
    assert client.get(PAGE, headers={"Authorization": "Bearer forged"}).status_code == 403


@pytest.mark.smoke
def test_viewer_gets_403_for_page_and_cancel(api_app: Any, running: str, emulator_http: httpx.Client) -> None:
    client = client_for(api_app, "viewer")
    assert client.get("/api/v2/dags").status_code == 200  # a real, logged-in user
    assert client.get(PAGE).status_code == 403
    assert client.get(f"{PAGE}?conn_id={DB_CONN}").status_code == 403
    assert client.get(f"/anthropix/api/batches/{DB_CONN}/{running}").status_code == 403
    answer = client.post(cancel_url(running), json={}, headers={"Origin": "http://testserver"})
    assert answer.status_code == 403
    assert status_of(emulator_http, running) == "in_progress"


@pytest.mark.parametrize("user", ["op", "admin"])
def test_op_and_admin_see_the_batches_with_progress(
    api_app: Any, user: str, emulator: EmulatorHandle, emulator_http: httpx.Client
) -> None:
    emulator.config.processing_seconds = 3600
    ids = [create(emulator_http, n) for n in (3, 5)]
    client = client_for(api_app, user)
    page = client.get(PAGE)
    assert page.status_code == 200, page.text
    assert f"Connection <code>{DB_CONN}</code>" in page.text
    for batch_id in ids:
        assert f'data-batch-id="{batch_id}"' in page.text
    assert 'role="progressbar"' in page.text and "0/5" in page.text
    listing = client.get("/anthropix/api/batches").json()
    section = next(s for s in listing["connections"] if s["conn_id"] == DB_CONN)
    assert [b["id"] for b in section["batches"]] == ids[::-1]
    assert section["batches"][0]["total"] == 5 and "percent" in section["batches"][0]


@pytest.mark.smoke
def test_op_cancels_from_the_detail_page(api_app: Any, running: str, emulator_http: httpx.Client) -> None:
    client = client_for(api_app, "op")
    detail = client.get(f"/anthropix/batches/{DB_CONN}/{running}")
    assert detail.status_code == 200
    assert 'id="cancel"' in detail.text and cancel_url(running) in detail.text
    answer = client.post(cancel_url(running), json={}, headers={"Origin": "http://testserver"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["processing_status"] == "canceling"
    assert status_of(emulator_http, running) == "canceling"


@pytest.mark.smoke
def test_cancel_refused_cross_origin_or_form_encoded(api_app: Any, running: str, emulator_http: httpx.Client) -> None:
    client = client_for(api_app, "op")
    evil = client.post(cancel_url(running), json={}, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "Cross-origin" in evil.json()["detail"]
    no_origin = client.post(cancel_url(running), json={})
    assert no_origin.status_code == 403
    form = client.post(cancel_url(running), data={"x": "1"}, headers={"Origin": "http://testserver"})
    assert form.status_code == 415
    plain = client.post(
        cancel_url(running), content="{}", headers={"Origin": "http://testserver", "Content-Type": "text/plain"}
    )
    assert plain.status_code == 415
    assert client.get(cancel_url(running)).status_code == 405
    assert status_of(emulator_http, running) == "in_progress"


def test_bearer_token_cancel_without_origin(api_app: Any, running: str, emulator_http: httpx.Client) -> None:
    client = client_for(api_app)
    token = client.post("/auth/token", json={"username": "op", "password": PASSWORDS["op"]}).json()["access_token"]
    answer = client.post(cancel_url(running), json={}, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert status_of(emulator_http, running) == "canceling"


def test_unknown_batch_is_404(api_app: Any, emulator: EmulatorHandle) -> None:
    client = client_for(api_app, "op")
    assert client.get(f"/anthropix/api/batches/{DB_CONN}/msgbatch_nope").status_code == 404


DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor

with DAG("page_provenance", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
    create = CreateBatchOperator(
        task_id="create", anthropix_conn_id="anthropix_page_env",
        requests=[
            {"custom_id": "a", "params": {"messages": [{"role": "user", "content": "hi"}]}},
            {"custom_id": "b", "params": {"messages": [{"role": "user", "content": "[[emulator:errored:overloaded_error]]"}]}},
        ],
        default_params={"model": "claude-haiku-4-5", "max_tokens": 8},
    )
    wait = BatchEndedSensor(task_id="wait", batch_id=create.output, anthropix_conn_id="anthropix_page_env",
                            poke_interval=0.1)
    fetch = FetchBatchResultsOperator(task_id="fetch", batch_id=create.output, destination=DEST,
                                      anthropix_conn_id="anthropix_page_env")
    create >> wait >> fetch
"""


def run_dag_file(dags_folder: Path, name: str, source: str) -> Any:
    path = dags_folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"{name}_dag", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag.test()


def section_of(client: Any, conn_id: str) -> dict[str, Any]:
    listing = client.get("/anthropix/api/batches", params={"limit": 100}).json()
    return next(s for s in listing["connections"] if s["conn_id"] == conn_id)


def stored_xcom(dag_id: str, run_id: str, task_id: str, key: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        )
    return json.loads(value) if isinstance(value, str) else value


def created_plus_29_days(batch: dict[str, Any]) -> str:
    import pendulum

    created = pendulum.parse(batch["created_at"])
    assert isinstance(created, pendulum.DateTime)
    return str((created + pendulum.duration(days=29)).in_timezone("UTC").to_iso8601_string())


@needs_dag_test
def test_page_shows_the_dag_run_and_cost_of_a_batch(
    api_app: Any,
    dags_folder: Path,
    emulator: EmulatorHandle,
    emulator_api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = {"conn_type": "anthropix", "password": emulator_api_key, "host": emulator.url}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_PAGE_ENV", json.dumps(conn))
    source = textwrap.dedent(DAG).replace("DEST", repr(f"file://{tmp_path}/out"))
    dag_run = run_dag_file(dags_folder, "page_provenance", source)
    assert {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()} == {
        "create": "success",
        "wait": "success",
        "fetch": "success",
    }
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["errored_by_type"] == {"overloaded_error": 1}

    client = client_for(api_app, "op")
    (batch,) = section_of(client, "anthropix_page_env")["batches"]  # a connection from the environment
    assert (batch["dag_id"], batch["run_id"], batch["task_id"]) == ("page_provenance", dag_run.run_id, "create")
    assert batch["made_by"] == "create" and batch["cost_scope"] == "batch"
    assert batch["cost_usd"] == manifest["estimated_cost_usd"]
    estimate = stored_xcom("page_provenance", dag_run.run_id, "create", "estimate")
    assert batch["estimate_usd"] == estimate["expected_cost_usd"] > 0  # the create's own estimate
    assert batch["results"] == manifest["destination"]
    page = client.get(PAGE).text
    run_href = f"/dags/page_provenance/runs/{quote(dag_run.run_id, safe='')}"
    assert f'href="{run_href}/tasks/create"' in page
    assert f"${manifest['estimated_cost_usd']:.4f}" in page

    detail = client.get(f"/anthropix/api/batches/anthropix_page_env/{batch['id']}").json()
    assert detail["errored_by_type"] == {"overloaded_error": 1}  # read from the batch's results
    assert detail["results_until"] == created_plus_29_days(detail)
    html = client.get(f"{PAGE}/anthropix_page_env/{batch['id']}").text
    assert f'href="{run_href}"' in html and 'target="_top"' in html
    assert "<code>overloaded_error</code> 1" in html
    assert f"${estimate['expected_cost_usd']:.4f}" in html  # estimated
    assert f"${manifest['estimated_cost_usd']:.4f}" in html  # actual, from the results' usage
    assert f"<code>{manifest['destination']}</code>" in html
    assert detail["results_until"][:16].replace("T", " ") in html


JOB_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_anthropix.operators.job import BatchJobOperator

with DAG("page_job", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
    BatchJobOperator(
        task_id="job", requests_path=INPUT, destination=DEST, anthropix_conn_id="anthropix_page_job",
        default_params={"model": "claude-haiku-4-5", "max_tokens": 8}, max_requests_per_batch=3,
        max_retry_rounds=0, max_errored_ratio=None, poll_interval=0.2,
    )
"""


@needs_dag_test
def test_page_attributes_every_batch_of_a_job(
    api_app: Any,
    dags_folder: Path,
    emulator: EmulatorHandle,
    emulator_api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = {"conn_type": "anthropix", "password": emulator_api_key, "host": emulator.url}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_PAGE_JOB", json.dumps(conn))
    prompts = tmp_path / "prompts.jsonl"
    with prompts.open("w") as fh:
        for i in range(8):
            text = "[[emulator:errored:invalid_request_error]]" if i == 4 else f"question {i}"
            fh.write(json.dumps({"custom_id": f"q-{i}", "params": {"messages": [{"role": "user", "content": text}]}}))
            fh.write("\n")
    source = textwrap.dedent(JOB_DAG).replace("INPUT", repr(str(prompts))).replace("DEST", repr(str(tmp_path / "out")))
    dag_run = run_dag_file(dags_folder, "page_job", source)
    assert {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()} == {"job": "success"}
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    job_ids = {b["batch_id"] for b in manifest["job"]["batch_list"]}
    assert len(job_ids) == 3  # 8 requests, 3 a batch

    client = client_for(api_app, "op")
    batches = section_of(client, "anthropix_page_job")["batches"]
    assert {b["id"] for b in batches} == job_ids
    for batch in batches:
        assert (batch["dag_id"], batch["run_id"], batch["task_id"]) == ("page_job", dag_run.run_id, "job")
        assert batch["made_by"] == "job" and batch["cost_scope"] == "job" and batch["job_batches"] == 3
        assert batch["cost_usd"] == manifest["estimated_cost_usd"]  # the whole job's
        assert batch["estimate_usd"] == manifest["estimate"]["expected_cost_usd"]
        assert batch["results"] == manifest["destination"]
    page = client.get(PAGE, params={"conn_id": "anthropix_page_job"}).text
    assert page.count(f'href="/dags/page_job/runs/{quote(dag_run.run_id, safe="")}/tasks/job"') == 3
    errored = next(b for b in batches if b["request_counts"]["errored"])
    html = client.get(f"{PAGE}/anthropix_page_job/{errored['id']}").text
    assert "<code>invalid_request_error</code> 1" in html
    assert "a BatchJobOperator job of 3 batches" in html


def test_job_batch_ids_xcom_is_small_sorted_and_bounded() -> None:
    from airflow_provider_anthropix.operators.attribution import MAX_IDS, XCOM_KEY, push_job_batches

    class Ti:
        def __init__(self) -> None:
            self.pushed: dict[str, Any] = {}

        def xcom_push(self, key: str, value: Any) -> None:
            self.pushed[key] = value

    ti = Ti()
    push_job_batches({"ti": ti}, {"msgbatch_b", "msgbatch_a", ""}, {"expected_cost_usd": 0.5})
    assert ti.pushed == {XCOM_KEY: ["msgbatch_a", "msgbatch_b"], "estimate": {"expected_cost_usd": 0.5}}
    many = [f"msgbatch_{i:06d}" for i in range(MAX_IDS + 50)]
    push_job_batches({"ti": ti}, many)
    assert ti.pushed[XCOM_KEY] == many[:MAX_IDS] and len(json.dumps(ti.pushed[XCOM_KEY])) < 64_000
    push_job_batches({}, many)  # no task instance (a bare execute() in a unit test): nothing to push to


class GetOnlyConnections:
    """A stub auth manager: the real one for who the user is, but connections may be read (GET), never edited (PUT)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.asked: list[str] = []

    async def get_user_from_token(self, token: str) -> Any:
        return await self.real.get_user_from_token(token)

    def is_authorized_connection(self, *, method: str, details: Any, user: Any) -> bool:
        self.asked.append(method)
        return method == "GET"

    def get_authorized_dag_ids(self, *, user: Any, method: str = "GET") -> set[str]:
        return set(self.real.get_authorized_dag_ids(user=user, method=method))


def test_a_reader_of_connections_cannot_cancel(
    api_app: Any, running: str, emulator_http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.api_fastapi.app import get_auth_manager

    from airflow_provider_anthropix.plugins import security

    stub = GetOnlyConnections(get_auth_manager())
    monkeypatch.setattr(security, "_auth_manager", lambda: stub)
    client = client_for(api_app, "op")  # OP could cancel; under the stub they may only read connections
    assert client.get(PAGE).status_code == 200
    detail = client.get(f"{PAGE}/{DB_CONN}/{running}")
    assert detail.status_code == 200 and running in detail.text
    assert 'id="cancel"' not in detail.text  # no button for those who may not
    answer = client.post(cancel_url(running), json={}, headers={"Origin": "http://testserver"})
    assert answer.status_code == 403, answer.text
    assert "cancel batches with" in answer.json()["detail"]
    assert "PUT" in stub.asked
    assert status_of(emulator_http, running) == "in_progress"


class CountingServer:
    """A loopback HTTP server that answers everything with 200 ``{}`` and keeps what it was sent."""

    def __init__(self) -> None:
        import http.server
        import threading

        seen: list[tuple[str, str, dict[str, str]]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                seen.append((self.command, self.path, dict(self.headers)))
                body = b"{}"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.requests = seen
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_server() -> Iterator[CountingServer]:
    server = CountingServer()
    yield server
    server.close()


POSTGRES_PASSWORD = "pg-secret-never-to-leave-7f3a"


@pytest.mark.parametrize("where", ["database", "environment"])
def test_a_connection_of_another_type_is_refused_and_never_called(
    api_app: Any, counting_server: CountingServer, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    conn_id = f"warehouse_pg_{where}"
    fields = {"conn_type": "postgres", "host": counting_server.url, "password": POSTGRES_PASSWORD, "port": None}
    if where == "database":
        with create_session() as session:
            session.add(Connection(conn_id=conn_id, login="etl", **fields))
    else:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    client = client_for(api_app, "admin")
    answers = {
        "page": client.get(PAGE, params={"conn_id": conn_id}),
        "list": client.get("/anthropix/api/batches", params={"conn_id": conn_id}),
        "detail page": client.get(f"{PAGE}/{conn_id}/msgbatch_x"),
        "detail": client.get(f"/anthropix/api/batches/{conn_id}/msgbatch_x"),
        "cancel": client.post(
            f"/anthropix/api/batches/{conn_id}/msgbatch_x/cancel", json={}, headers={"Origin": "http://testserver"}
        ),
    }
    assert [(method, path) for method, path, _ in counting_server.requests] == []
    for name, answer in answers.items():
        assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text)
        assert POSTGRES_PASSWORD not in answer.text, name
        assert "postgres" in answer.text and "anthropix" in answer.text, (name, answer.text)
    listing = client.get("/anthropix/api/batches")  # every connection: a postgres one is not among them
    assert listing.status_code == 200 and conn_id not in listing.text
    assert counting_server.requests == []

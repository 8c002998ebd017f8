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
        requests=[{"custom_id": "a", "params": {"messages": [{"role": "user", "content": "hi"}]}}],
        default_params={"model": "claude-haiku-4-5", "max_tokens": 8},
    )
    wait = BatchEndedSensor(task_id="wait", batch_id=create.output, anthropix_conn_id="anthropix_page_env",
                            poke_interval=0.1)
    fetch = FetchBatchResultsOperator(task_id="fetch", batch_id=create.output, destination=DEST,
                                      anthropix_conn_id="anthropix_page_env")
    create >> wait >> fetch
"""


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
    path = dags_folder / "page_provenance.py"
    path.write_text(textwrap.dedent(DAG).replace("DEST", repr(f"file://{tmp_path}/out")))
    spec = importlib.util.spec_from_file_location("page_provenance_dag", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag_run = module.dag.test()
    assert {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()} == {
        "create": "success",
        "wait": "success",
        "fetch": "success",
    }
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())

    client = client_for(api_app, "op")
    listing = client.get("/anthropix/api/batches").json()
    section = next(s for s in listing["connections"] if s["conn_id"] == "anthropix_page_env")  # from the environment
    (batch,) = section["batches"]
    assert (batch["dag_id"], batch["run_id"], batch["task_id"]) == ("page_provenance", dag_run.run_id, "create")
    assert batch["estimated_cost_usd"] == manifest["estimated_cost_usd"]
    page = client.get(PAGE).text
    assert f"page_provenance / {dag_run.run_id} / create" in page
    assert f"${manifest['estimated_cost_usd']:.4f}" in page

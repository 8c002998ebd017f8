"""The FastAPI app behind the Batches page, built on its first request (see :class:`LazyApp`).

Pages: ``GET /batches`` (every ``anthropix`` connection the user may read, newest batches
first) and ``GET /batches/{conn_id}/{batch_id}`` (one batch, with a cancel button for
those who may). The same data as JSON under ``/api/...``; ``POST
/api/batches/{conn_id}/{batch_id}/cancel`` cancels. Calls to the Batches API are blocking,
so the routes that make them are plain functions FastAPI runs in its thread pool.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_anthropix.api.errors import (
    AnthropixAPIError,
    AnthropixError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
)
from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError
from airflow_provider_anthropix.links import results_url
from airflow_provider_anthropix.plugins import URL_PREFIX, data, security, templates
from airflow_provider_anthropix.plugins.security import Caller

DEFAULT_LIMIT = 20
#: Seconds between reloads of a page that shows a batch still running.
REFRESH_SECONDS = 10

CallerDep = Annotated[Caller, Depends(security.current_caller)]


def _problem(conn_id: str, exc: Exception) -> str:
    """A line for the page about a connection that could not be listed (already redacted by the client)."""
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return f"The API refused the key of {conn_id!r}: {exc}"
    if isinstance(exc, ConnectionSettingsError):
        return str(exc)
    return f"Could not list the batches of {conn_id!r}: {exc}"


def _wrong_type(exc: data.NotAnthropixConnection) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, str(exc))


def _connection_batches(conn_id: str, limit: int) -> tuple[list[Any], str | None]:
    try:
        client = data.client_for(conn_id)
    except data.NotAnthropixConnection as exc:
        return [], str(exc)
    except AnthropixError as exc:
        return [], _problem(conn_id, exc)
    except Exception as exc:  # the connection vanished, or a secrets backend failed
        return [], f"Could not read connection {conn_id!r}: {type(exc).__name__}"
    try:
        return list(client.list_batches(limit=limit).data), None
    except AnthropixError as exc:
        return [], _problem(conn_id, exc)
    finally:
        client.close()


def _check_type(conn_id: str) -> None:
    """A connection named in the request must be an ``anthropix`` one (400), and exist (404): before any call."""
    from airflow.models.connection import Connection

    try:
        conn_type = Connection.get_connection_from_secrets(conn_id).conn_type
    except Exception:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No connection {conn_id!r}") from None
    if conn_type != data.CONN_TYPE:
        raise _wrong_type(data.NotAnthropixConnection(conn_id, conn_type))


def _sections(caller: Caller, conn_id: str | None, limit: int) -> list[dict[str, Any]]:
    if not security.may_use(caller, None, "GET") and conn_id is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You may not see connections")
    if conn_id is not None:
        security.require(caller, conn_id, "GET")
        _check_type(conn_id)
        conn_ids = [conn_id]
    else:
        conn_ids = [c for c in data.anthropix_conn_ids() if security.may_use(caller, c, "GET")]
    listed = [(c, *_connection_batches(c, limit)) for c in conn_ids]
    ids = {b.id for _, batches, _ in listed for b in batches}
    origins = data.provenance(ids, security.readable_dag_ids(caller))
    return [
        {"conn_id": c, "error": error, "batches": [data.batch_json(b, origins.get(b.id)) for b in batches]}
        for c, batches, error in listed
    ]


def _one_batch(caller: Caller, conn_id: str, batch_id: str) -> dict[str, Any]:
    security.require(caller, conn_id, "GET")
    try:
        client = data.client_for(conn_id)
    except data.NotAnthropixConnection as exc:
        raise _wrong_type(exc) from None
    except AnthropixError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None
    except Exception:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No connection {conn_id!r}") from None
    try:
        batch = client.get_batch(batch_id)
        errors = _errors_by_type(conn_id, client, batch)
    except NotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No batch {batch_id!r} for connection {conn_id!r}") from None
    except AnthropixError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None
    finally:
        client.close()
    origins = data.provenance({batch.id}, security.readable_dag_ids(caller))
    return {**data.batch_json(batch, origins.get(batch.id)), "errored_by_type": errors}


def _errors_by_type(conn_id: str, client: Any, batch: Any) -> dict[str, int] | None:
    """The detail's error breakdown; a results stream that fails to download or parse leaves it unknown."""
    from airflow_provider_anthropix.io.summary import ResultsFormatError

    try:
        return data.errors_by_type(conn_id, client, batch)
    except (AnthropixError, ResultsFormatError):
        return None


def _cancel(conn_id: str, batch_id: str) -> dict[str, Any]:
    try:
        client = data.client_for(conn_id)
    except data.NotAnthropixConnection as exc:
        raise _wrong_type(exc) from None
    except Exception:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No usable connection {conn_id!r}") from None
    try:
        return data.batch_json(client.cancel_batch(batch_id), None)
    except NotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No batch {batch_id!r} for connection {conn_id!r}") from None
    except AnthropixAPIError as exc:
        code = status.HTTP_409_CONFLICT if exc.status == 400 else status.HTTP_502_BAD_GATEWAY
        raise HTTPException(code, exc.message) from None
    except AnthropixError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None
    finally:
        client.close()


def create_app() -> FastAPI:
    """The sub-application Airflow mounts at ``/anthropix``."""
    app = FastAPI(title="Anthropix batches", docs_url=None, redoc_url=None, openapi_url=None)
    env = templates.environment()

    def prefix(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def ui_root(request: Request) -> str:
        """The Airflow UI's own root: the api-server's, i.e. where this app is mounted minus its prefix."""
        return prefix(request).removesuffix(URL_PREFIX)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        if request.url.path.startswith(prefix(request) + "/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        page = (
            "<!doctype html><meta charset=utf-8><title>Anthropix</title>"
            f"<p>{html.escape(str(exc.detail))}</p>"
            '<p><a href="/auth/login">Log in to Airflow</a></p>'
        )
        return HTMLResponse(page, status_code=exc.status_code)

    @app.get("/batches", response_class=HTMLResponse)
    def batches_page(
        request: Request,
        caller: CallerDep,
        conn_id: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = DEFAULT_LIMIT,
    ) -> HTMLResponse:
        sections = _sections(caller, conn_id, limit)
        running = any(b["processing_status"] != "ended" for s in sections for b in s["batches"])
        html = env.get_template("list").render(
            title="Batches",
            sections=sections,
            prefix=prefix(request),
            ui=ui_root(request),
            limit=limit,
            refresh=REFRESH_SECONDS if running else None,
        )
        return HTMLResponse(html)

    @app.get("/batches/{conn_id}/{batch_id}", response_class=HTMLResponse)
    def batch_page(request: Request, caller: CallerDep, conn_id: str, batch_id: str) -> HTMLResponse:
        batch = _one_batch(caller, conn_id, batch_id)
        html = env.get_template("detail").render(
            title=batch["id"],
            b=batch,
            conn_id=conn_id,
            prefix=prefix(request),
            ui=ui_root(request),
            results_href=results_url(batch["results"]) if batch["results"] else "",
            can_cancel=security.may_use(caller, conn_id, "PUT"),
            refresh=REFRESH_SECONDS if batch["processing_status"] != "ended" else None,
        )
        return HTMLResponse(html)

    @app.get("/api/batches")
    def batches_json(
        caller: CallerDep,
        conn_id: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = DEFAULT_LIMIT,
    ) -> dict[str, Any]:
        return {"connections": _sections(caller, conn_id, limit)}

    @app.get("/api/batches/{conn_id}/{batch_id}")
    def batch_json(caller: CallerDep, conn_id: str, batch_id: str) -> dict[str, Any]:
        return _one_batch(caller, conn_id, batch_id)

    @app.post("/api/batches/{conn_id}/{batch_id}/cancel")
    async def cancel(request: Request, caller: CallerDep, conn_id: str, batch_id: str) -> dict[str, Any]:
        security.require(caller, conn_id, "PUT")
        await security.check_state_change(request, caller)
        return await run_in_threadpool(_cancel, conn_id, batch_id)

    return app

"""Who is asking, and may they: the Batches page behind Airflow's auth manager.

The page runs inside the api-server as a mounted app, so Airflow's own ``core_api`` security
dependencies that read ``request.app.state.auth_manager`` would look at this app's empty
state; the auth manager is taken from :func:`airflow.api_fastapi.app.get_auth_manager`
instead, and the user from the same places Airflow reads: an ``Authorization: Bearer`` token
first, else the UI's ``_token`` cookie.

Access is the connection's: seeing a connection's batches needs ``GET`` on that
connection, cancelling needs ``PUT`` (acting with its key). Under the simple auth manager
that is the OP and ADMIN roles; a VIEWER is refused.

Airflow 3 has no CSRF tokens (the JWT cookie is ``httponly`` and ``SameSite=Lax``), so a
state-changing call is accepted only as a JSON POST, and, when the caller is identified by
the cookie, only from the api-server's own origin (the ``Origin`` header).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, status

COOKIE_NAME = "_token"


@dataclass(frozen=True)
class Caller:
    """The authenticated user, and whether they came with the cookie (a browser) or a bearer token."""

    user: Any
    via_cookie: bool


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def _token(request: Request) -> tuple[str | None, bool]:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), False
    return request.cookies.get(COOKIE_NAME), True


async def current_caller(request: Request) -> Caller:
    """FastAPI dependency: the user, or 401 (no or expired token) / 403 (a token that does not verify)."""
    from jwt import ExpiredSignatureError, InvalidTokenError

    token, via_cookie = _token(request)
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated: log in to Airflow first")
    try:
        user = await _auth_manager().get_user_from_token(token)
    except ExpiredSignatureError:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Token expired: log in again") from None
    except InvalidTokenError:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Invalid token") from None
    return Caller(user=user, via_cookie=via_cookie)


def _team_of(conn_id: str | None) -> str | None:
    from airflow.configuration import conf

    if conn_id is None or not conf.getboolean("core", "multi_team", fallback=False):
        return None
    from airflow.models.connection import Connection

    team: str | None = Connection.get_team_name(conn_id)
    return team


def may_use(caller: Caller, conn_id: str | None, method: Literal["GET", "PUT"]) -> bool:
    """Whether the auth manager lets the caller read (GET) or act with (PUT) this connection (None: any)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails

    details = ConnectionDetails(conn_id=conn_id, team_name=_team_of(conn_id))
    return bool(_auth_manager().is_authorized_connection(method=method, details=details, user=caller.user))


def require(caller: Caller, conn_id: str, method: Literal["GET", "PUT"]) -> None:
    if not may_use(caller, conn_id, method):
        what = "see the batches of" if method == "GET" else "cancel batches with"
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"You may not {what} connection {conn_id!r}")


def readable_dag_ids(caller: Caller) -> set[str]:
    """The DAGs whose runs the caller may see: the page names a batch's DAG, run and task only for these."""
    try:
        return set(_auth_manager().get_authorized_dag_ids(user=caller.user, method="GET"))
    except Exception:  # an auth manager that cannot list: show no provenance rather than too much
        return set()


def _own_origins(request: Request) -> set[str]:
    origins = {f"{request.url.scheme}://{request.url.netloc}"}
    from airflow.configuration import conf

    base_url = conf.get("api", "base_url", fallback="") or ""
    parts = urlsplit(base_url)
    if parts.scheme and parts.netloc:
        origins.add(f"{parts.scheme}://{parts.netloc}")
    return origins


async def check_state_change(request: Request, caller: Caller) -> None:
    """A cancel: JSON only (415 otherwise), and from the page's own origin when sent by a browser (403)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Send a JSON body (Content-Type: application/json)")
    origin = request.headers.get("origin")
    # A browser sends Origin with every POST; a script with a bearer token may leave it out.
    if (origin is not None or caller.via_cookie) and origin not in _own_origins(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"Cross-origin request refused (Origin: {origin or 'none'})")
    try:
        await request.json()
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "The body is not JSON") from None

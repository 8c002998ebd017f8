"""Turning an Airflow connection into :class:`ClientConfig`, with errors that name the field to fix.

Kept free of Airflow imports (it reads any object with ``host``, ``password``, ``port`` and
``extra_dejson``), so the rules are testable without a metadata database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from airflow_provider_anthropix.api.config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    ClientConfig,
    header_value_problem,
)
from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.limits import DEFAULT_API_VERSION, DEFAULT_BASE_URL, check_api_version
from airflow_provider_anthropix.api.origin import AmbiguousURLError, plain_url
from airflow_provider_anthropix.api.redact import Redactor, url_credentials
from airflow_provider_anthropix.api.retry import DEFAULT_MAX_RETRIES


class ConnectionLike(Protocol):
    host: str | None
    password: str | None
    port: int | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


class ConnectionSettingsError(AnthropixError):
    """The Airflow connection cannot be turned into working client settings; says which field to fix."""


def _fail(conn_id: str, field: str, problem: str) -> ConnectionSettingsError:
    return ConnectionSettingsError(f"connection {conn_id!r}: {field}: {problem}")


_HOST_FIELD = "host (Base URL)"


def base_url_from(conn_id: str, host: str | None, port: int | None) -> str:
    """``https://api.anthropic.com`` by default; otherwise the host field as a plain ``http(s)://host[:port]``.

    A host without a scheme is refused rather than guessed: taking ``127.0.0.1:8787`` as
    https turns a local emulator into a TLS failure that reads like a lost create. Userinfo
    (``user:password@``) is refused too, and never echoed: the key goes in the password field.
    """
    host = (host or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    shown = Redactor(url_credentials(host if "://" in host else f"//{host}"))(repr(host))
    if "://" not in host:
        bare = host.lstrip("/")
        raise _fail(
            conn_id,
            _HOST_FIELD,
            f"{shown} has no scheme; write http://{bare} for a plain-HTTP server such as the local emulator, "
            f"or https://{bare} for the Anthropic API or a TLS gateway",
        )
    scheme, _, rest = host.partition("://")
    if scheme.lower() not in ("http", "https"):
        raise _fail(
            conn_id, _HOST_FIELD, f"{shown} is not an http:// or https:// URL; expected e.g. https://api.anthropic.com"
        )
    if "@" in rest.split("/", 1)[0]:
        raise _fail(
            conn_id,
            _HOST_FIELD,
            f"{shown} has user:password@ in it; remove it (the API key goes in the password field, "
            "proxy credentials in extra.proxies)",
        )
    candidate = f"{scheme.lower()}://{rest}"
    try:
        origin = plain_url(candidate)
    except AmbiguousURLError as exc:
        raise _fail(conn_id, _HOST_FIELD, f"{shown} is not a valid URL: it {exc}") from None
    parts = urlsplit(candidate)
    if parts.query or parts.path.strip("/"):
        raise _fail(
            conn_id,
            _HOST_FIELD,
            f"{shown} has a path; give only scheme, host and port (paths start with /v1 by themselves)",
        )
    base = candidate.rstrip("/")
    if port and parts.port is None:
        base = f"{base}:{port}"
    elif port and origin.port != port:
        raise _fail(conn_id, "port", f"{port} differs from the port in the host field ({origin.port}); keep one")
    return base


def _header_field(conn_id: str, field: str, value: str, *, secret: bool = False) -> str:
    problem = header_value_problem(value)
    if problem is not None:
        raise _fail(conn_id, field, problem if secret else f"{value!r} {problem}")
    return value


def _number(conn_id: str, field: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(conn_id, f"extra.{field}", f"expected a number of seconds, got {value!r}") from None
    if number <= 0:
        raise _fail(conn_id, f"extra.{field}", f"must be positive, got {value!r}")
    return number


def _timeouts(conn_id: str, value: Any) -> tuple[float, float]:
    """``timeout`` is one number (read), ``[connect, read]`` or ``{"connect": .., "read": ..}``."""
    if value is None or value == "":
        return DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
    if isinstance(value, Mapping):
        return (
            _number(conn_id, "timeout.connect", value.get("connect", DEFAULT_CONNECT_TIMEOUT)),
            _number(conn_id, "timeout.read", value.get("read", DEFAULT_READ_TIMEOUT)),
        )
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise _fail(conn_id, "extra.timeout", f"expected [connect, read], got {value!r}")
        return _number(conn_id, "timeout", value[0]), _number(conn_id, "timeout", value[1])
    read = _number(conn_id, "timeout", value)
    return min(DEFAULT_CONNECT_TIMEOUT, read), read


def _beta(conn_id: str, value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(item.strip() for item in value if item.strip())
    raise _fail(conn_id, "extra.anthropic_beta", f"expected a list of strings, got {value!r}")


def config_from_connection(conn_id: str, conn: ConnectionLike) -> ClientConfig:
    """Build client settings from a connection: password = key, host = base URL, extras = the rest."""
    key = (conn.password or "").strip()
    if not key:
        raise _fail(conn_id, "password (API Key)", "is empty; put the Anthropic API key in the connection's password")
    _header_field(conn_id, "password (API Key)", key, secret=True)
    extra = conn.extra_dejson or {}
    version = str(extra.get("anthropic_version") or DEFAULT_API_VERSION)
    if (problem := check_api_version(version)) is not None:
        raise _fail(conn_id, "extra.anthropic_version", problem)
    max_retries_raw = extra.get("max_retries", DEFAULT_MAX_RETRIES)
    try:
        max_retries = int(max_retries_raw)
    except (TypeError, ValueError):
        raise _fail(conn_id, "extra.max_retries", f"expected an integer, got {max_retries_raw!r}") from None
    if max_retries < 0:
        raise _fail(conn_id, "extra.max_retries", f"must be 0 or more, got {max_retries}")
    proxies = extra.get("proxies") or None
    if proxies is not None and not (isinstance(proxies, Mapping) and all(isinstance(v, str) for v in proxies.values())):
        raise _fail(conn_id, "extra.proxies", 'expected {"http": "http://proxy:3128", "https": "..."}')
    beta = tuple(
        _header_field(conn_id, "extra.anthropic_beta", item) for item in _beta(conn_id, extra.get("anthropic_beta"))
    )
    workspace = str(extra["workspace_id"]) if extra.get("workspace_id") else None
    if workspace is not None:
        _header_field(conn_id, "extra.workspace_id", workspace)
    connect_timeout, read_timeout = _timeouts(conn_id, extra.get("timeout"))
    return ClientConfig(
        api_key=key,
        base_url=base_url_from(conn_id, conn.host, conn.port),
        anthropic_version=version,
        anthropic_beta=beta,
        workspace_id=workspace,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_retries=max_retries,
        proxies=dict(proxies) if proxies else None,
        connection_id=conn_id,
    )

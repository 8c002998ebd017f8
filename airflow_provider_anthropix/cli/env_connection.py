"""An Airflow connection read from ``AIRFLOW_CONN_<ID>`` without importing Airflow.

Importing Airflow to read one environment variable costs the command line 5-6 s per call
(its configuration, settings and secrets machinery); this reads the variable the way Airflow's
task SDK does, in the standard library alone, so ``anthropix ... --conn-id ID`` answers as
fast as ``--base-url``. Only when the variable is not set does the CLI import Airflow to ask
the configured secrets backend (:mod:`.credentials`).

The two forms Airflow accepts, mirrored from ``airflow.sdk.definitions.connection.Connection``
(``from_json`` and ``from_uri``) for the fields the hook uses (password, host, port, schema,
login, extra):

- JSON, when the value starts with ``{``: ``{"conn_type": "anthropix", "password": "...",
  "host": "https://api.anthropic.com", "port": 443, "extra": {...}}``; ``extra`` is an object
  or a string holding one.
- URI: ``anthropix://:KEY@host:port/schema?extra``, every part percent-encoded. A host with
  its own scheme is written ``anthropix://http://:KEY@127.0.0.1:8787`` (what Airflow's
  ``get_uri`` produces) or percent-encoded in the host (``anthropix://:KEY@http%3A%2F%2F127.0.0.1:8787``).
  Extras are the query: ``__extra__=<JSON>``, or plain ``name=value`` pairs (values are then
  strings, as in Airflow).

The value holds the API key, so no message built here quotes it, or any part of it: a
malformed value is described by its shape and the field at fault, never echoed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError

#: What Airflow's environment secrets backend prepends to the upper-cased connection id.
CONN_ENV_PREFIX = "AIRFLOW_CONN_"
#: The query key of a URI whose extras are one JSON document (``Connection.EXTRA_KEY``).
EXTRA_KEY = "__extra__"
#: The fields of Airflow's ``Connection`` that a JSON value may set (any other one is a TypeError there).
JSON_FIELDS = frozenset({"conn_type", "description", "host", "schema", "login", "password", "port", "extra"})
_TEXT_FIELDS = ("conn_type", "description", "host", "schema", "login", "password")

_URI_SHAPE = "expected anthropix://:KEY@host:port?extra or a JSON object"


@dataclass
class EnvConnection:
    """The fields of a connection that :func:`~airflow_provider_anthropix.hooks.settings.config_from_connection` reads.

    ``repr`` leaves the password and extra out: the object may end up in a traceback.
    """

    conn_id: str
    conn_type: str | None = None
    description: str | None = None
    host: str | None = None
    login: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return self.extra

    def secrets(self) -> list[str]:
        """Values that must never appear in a message: the password and the login."""
        return [value for value in (self.password, self.login) if value]


def env_var_name(conn_id: str) -> str:
    """``AIRFLOW_CONN_`` + the upper-cased id, as Airflow's ``EnvironmentVariablesBackend`` looks it up."""
    return CONN_ENV_PREFIX + conn_id.upper()


def read_env_connection(conn_id: str, environ: Mapping[str, str] | None = None) -> EnvConnection | None:
    """The connection ``conn_id`` from its environment variable, or None when the variable is unset or empty.

    Raises :class:`ConnectionSettingsError` (naming the variable, never its value) when the
    variable is set but is neither a connection JSON object nor a connection URI.
    """
    value = (os.environ if environ is None else environ).get(env_var_name(conn_id))
    if not value:  # Airflow's backends treat an empty value as "not here" and ask the next one
        return None
    return parse_connection(conn_id, value)


def parse_connection(conn_id: str, value: str) -> EnvConnection:
    """``value`` (JSON or URI, as in ``AIRFLOW_CONN_<ID>``) as a connection; see the module docstring."""
    text = value.strip()
    if not text:
        raise _malformed(conn_id, "it is blank")
    if text[0] == "{":
        return _from_json(conn_id, text)
    return _from_uri(conn_id, text)


def _malformed(conn_id: str, problem: str) -> ConnectionSettingsError:
    return ConnectionSettingsError(
        f"connection {conn_id!r}: the environment variable {env_var_name(conn_id)} is not a connection "
        f"Airflow can read: {problem} (its value is not shown: it holds the key)"
    )


def _from_json(conn_id: str, text: str) -> EnvConnection:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # msg and position only: exc.doc (and so str(exc) with some versions) carries the value.
        raise _malformed(
            conn_id, f"it starts with '{{' but is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise _malformed(conn_id, "it is not a JSON object")
    unknown = sorted(key for key in data if key not in JSON_FIELDS)
    if unknown:
        named = [key for key in unknown if isinstance(key, str) and key.isidentifier() and len(key) <= 40]
        shown = ", ".join(named) if len(named) == len(unknown) else f"{len(unknown)} field(s)"
        raise _malformed(
            conn_id, f"it has fields a connection does not have ({shown}); allowed: {', '.join(sorted(JSON_FIELDS))}"
        )
    values: dict[str, str | None] = {}
    for name in _TEXT_FIELDS:
        item = data.get(name)
        if item is not None and not isinstance(item, str):
            raise _malformed(conn_id, f"{name} is a JSON {type(item).__name__}, expected a string")
        values[name] = item
    port = _json_port(conn_id, data.get("port"))
    extra = _extra(conn_id, data.get("extra"))
    return EnvConnection(conn_id=conn_id, port=port, extra=extra, **values)


def _json_port(conn_id: str, value: Any) -> int | None:
    """Airflow's ``from_json``: a falsy port is no port; anything else goes through ``int()``."""
    if not value:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise _malformed(conn_id, "port is not a whole number")
    try:
        return int(value)
    except ValueError:
        raise _malformed(conn_id, "port is not a whole number") from None


def _extra(conn_id: str, value: Any) -> dict[str, Any]:
    """The extra as the hook reads it (``extra_dejson``): an object, or a string holding a JSON object."""
    if value is None or value == "" or value == {}:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            # Airflow would log this and carry on with no extras (defaults for every setting);
            # saying so is kinder than a run that ignores the settings the person wrote.
            raise _malformed(
                conn_id, f"extra is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
    if not isinstance(value, dict):
        raise _malformed(conn_id, f"extra is a JSON {type(value).__name__}, expected an object")
    return value


def _hostname(parts: SplitResult) -> str:
    """``_parse_netloc_to_hostname`` of Airflow: the unquoted host, keeping a percent-encoded ``scheme://``."""
    hostname = unquote(parts.hostname or "")
    if "/" in hostname:
        hostname = parts.netloc
        if "@" in hostname:
            hostname = hostname.rsplit("@", 1)[1]
        if ":" in hostname:
            hostname = hostname.split(":", 1)[0]
        hostname = unquote(hostname)
    return hostname


def _from_uri(conn_id: str, uri: str) -> EnvConnection:
    """``Connection.from_uri`` of Airflow's task SDK, refusing (without echoing) what it would choke on."""
    schemes = uri.count("://")
    if schemes == 0:
        raise _malformed(conn_id, f"it is neither a JSON object nor a URI ({_URI_SHAPE})")
    if schemes > 2:
        raise _malformed(conn_id, f"it has more than two '://' ({_URI_SHAPE})")
    host_with_protocol = schemes == 2
    try:
        conn_type = urlsplit(uri).scheme
        if not conn_type:
            raise _malformed(conn_id, f"it does not start with a connection type such as anthropix:// ({_URI_SHAPE})")
        rest = uri.replace(f"{conn_type}://", "" if host_with_protocol else "//")
        if host_with_protocol:
            first = rest.split("://", 1)[0]
            if "@" in first or ":" in first:
                raise _malformed(
                    conn_id,
                    "a host with its own scheme goes first: anthropix://http://:KEY@host:port, "
                    "or percent-encode it: anthropix://:KEY@http%3A%2F%2Fhost:port",
                )
        parts = urlsplit(rest)
        protocol = parts.scheme if host_with_protocol else None
        host = _hostname(parts)
        quoted_schema = parts.path[1:]
        login = unquote(parts.username) if parts.username else parts.username
        password = unquote(parts.password) if parts.password else parts.password
        port = parts.port
        query = dict(parse_qsl(parts.query, keep_blank_values=True)) if parts.query else {}
    except ConnectionSettingsError:
        raise
    except ValueError:
        # urllib's messages quote the part it could not read (a port, a bracketed host), which
        # may be the key itself when a separator is missing or not percent-encoded.
        raise _malformed(
            conn_id,
            "it cannot be read as a URI (a port that is not a number, or a character of the key that is not "
            f"percent-encoded: write it as urllib.parse.quote(key, safe='') gives it; {_URI_SHAPE})",
        ) from None
    extra = _extra(conn_id, query[EXTRA_KEY]) if EXTRA_KEY in query else dict(query)
    return EnvConnection(
        conn_id=conn_id,
        conn_type=conn_type.replace("-", "_"),
        host=(f"{protocol}://{host}" if protocol else host) if host else None,
        login=login,
        password=password,
        schema=unquote(quoted_schema) if quoted_schema else quoted_schema,
        port=port,
        extra=extra,
    )

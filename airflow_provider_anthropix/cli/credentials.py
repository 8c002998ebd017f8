"""Which key and address a command uses: an Airflow connection, or ``--base-url`` + ``ANTHROPIC_API_KEY``.

With ``--conn-id`` the connection comes from ``AIRFLOW_CONN_<ID>`` when that variable is set,
read without importing Airflow (:mod:`.env_connection`: a command then answers in well under
a second instead of 5-6 s). Only when it is not set is Airflow imported, to ask the secrets
backend of ``[secrets] backend`` through the provider's hook, as Airflow's SDK does outside a
task. The SDK does not open the metadata database there (only tasks, through the api-server,
and server processes do), so a connection kept only in the database is not found; the error
says how to export it (see docs/operate.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_anthropix.api.errors import AnthropixError

if TYPE_CHECKING:
    from airflow_provider_anthropix.cli.commands import BatchClient

DEFAULT_CONN_ID = "anthropix_default"
API_KEY_ENV = "ANTHROPIC_API_KEY"


class CredentialsError(AnthropixError):
    """No usable key or address; the message names what to set (exit status 6)."""


@dataclass
class _EnvConnection:
    """The fields of an Airflow connection that :func:`config_from_connection` reads."""

    host: str | None
    password: str | None
    port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return self.extra


def export_command(conn_id: str) -> str:
    """A shell line that copies a metadata-database connection into the environment, where the CLI reads it."""
    var = "AIRFLOW_CONN_" + conn_id.upper()
    return (
        f'export {var}="$(airflow connections export - --file-format env --serialization-format json '
        f"| sed -n 's/^{conn_id}=//p')\""
    )


def not_in_db_hint(conn_id: str) -> str:
    """The error for a connection the CLI cannot see, with the way to reach one kept only in the database."""
    var = "AIRFLOW_CONN_" + conn_id.upper()
    return (
        f"connection {conn_id!r} was not found in the environment ({var}) or the configured secrets backend. "
        "Outside a task Airflow's SDK does not read the metadata database; for a connection kept there, "
        f"run: {export_command(conn_id)} (or use --base-url with ANTHROPIC_API_KEY)"
    )


def open_client(conn_id: str | None, base_url: str | None, api_version: str | None) -> BatchClient:
    """A ready client with ``get_batch``, ``list_batches``, ``cancel_batch``, ``delete_batch``, ``iter_result_bytes``.

    ``--base-url``, and ``--conn-id`` (the default) whose ``AIRFLOW_CONN_<ID>`` is set, build a
    :class:`SyncClient` without importing Airflow, with the hook's own checks of the settings;
    any other ``--conn-id`` goes through :class:`AnthropixHook` and Airflow's secrets backends.
    """
    from airflow_provider_anthropix.hooks.settings import config_from_connection

    if base_url is not None:
        key = os.environ.get(API_KEY_ENV, "")
        if not key.strip():
            raise CredentialsError(
                f"--base-url needs the API key in the {API_KEY_ENV} environment variable, which is not set"
            )
        from airflow_provider_anthropix.api.sync_client import SyncClient

        extra = {"anthropic_version": api_version} if api_version else {}
        config = config_from_connection("--base-url", _EnvConnection(host=base_url, password=key, extra=extra))
        return SyncClient(config)
    if api_version is not None:
        raise CredentialsError("--api-version applies to --base-url; a connection sets extra.anthropic_version")
    conn_id = conn_id or DEFAULT_CONN_ID
    from airflow_provider_anthropix.cli.env_connection import read_env_connection

    found = read_env_connection(conn_id)
    if found is not None:
        from airflow_provider_anthropix.api.redact import Redactor
        from airflow_provider_anthropix.api.sync_client import SyncClient
        from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError

        try:
            config = config_from_connection(conn_id, found)
        except ConnectionSettingsError as exc:
            # The checks never quote the key; a key typed into another field would still be one.
            raise ConnectionSettingsError(Redactor(found.secrets())(str(exc))) from None
        return SyncClient(config)
    # Airflow's logging writes to the standard output it finds when it configures itself (on first
    # use, here), and it warns there (an empty Fernet key, our own retries): that would break
    # `--json` and `results > file`. Its logs go to standard error instead, for the whole command.
    with contextlib.redirect_stdout(sys.stderr):
        return _client_from_airflow(conn_id)


def _client_from_airflow(conn_id: str) -> BatchClient:
    """The provider's hook on ``conn_id``, as Airflow's configured secrets backend serves it (checked now)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    from airflow_provider_anthropix.api.redact import Redactor
    from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
    from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError

    hook = AnthropixHook(anthropix_conn_id=conn_id)
    try:
        hook.config  # noqa: B018  (reads and checks the connection now, before any call)
    except AirflowNotFoundException:
        raise CredentialsError(not_in_db_hint(conn_id)) from None
    except ConnectionSettingsError as exc:
        # No secrets masker outside a task: a key typed into the host field must not be printed either.
        connection = hook.get_connection(conn_id)
        secrets = [value for value in (connection.password, connection.login) if value]
        raise ConnectionSettingsError(Redactor(secrets)(str(exc))) from None
    return hook

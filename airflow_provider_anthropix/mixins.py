"""What every operator and the sensor need from their Anthropix connection, written once.

The hook is built on first use in the running task, never in ``__init__``: a DAG file is
parsed over and over and must not read connections or import the HTTP clients.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk.exceptions import AirflowException

    from airflow_provider_anthropix.api import AnthropixError, ClientConfig
    from airflow_provider_anthropix.hooks.anthropix import AnthropixHook


class AnthropixHookMixin:
    """The hook of the task's ``anthropix_conn_id``, its settings, and API failures that name the connection."""

    anthropix_conn_id: str

    @cached_property
    def hook(self) -> AnthropixHook:
        from airflow_provider_anthropix.hooks.anthropix import AnthropixHook

        return AnthropixHook(anthropix_conn_id=self.anthropix_conn_id)

    def client_config(self) -> ClientConfig:
        """The connection's client settings; a bad field fails the task without retries (a retry reads the same)."""
        from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError

        try:
            return self.hook.config
        except ConnectionSettingsError as exc:
            raise AirflowFailException(str(exc)) from None

    def api_failure(self, exc: AnthropixError, doing: str) -> AirflowException:
        """The task failure for an API error met while ``doing`` something (see :func:`~.failures.airflow_error`)."""
        from airflow_provider_anthropix.failures import airflow_error

        return airflow_error(exc, doing=doing, conn_id=self.anthropix_conn_id)

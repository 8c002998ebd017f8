"""AnthropixHook: the Airflow connection turned into ready Message Batches clients."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import BaseHook

from airflow_provider_anthropix.api import (
    AnthropixAPIError,
    AnthropixConnectionError,
    AnthropixError,
    AuthenticationError,
    BadRequestError,
    BatchPage,
    ClientConfig,
    DeletedMessageBatch,
    EncodedBody,
    MessageBatch,
    ModelInfo,
    NotFoundError,
    PermissionDeniedError,
)
from airflow_provider_anthropix.hooks import DEFAULT_CONN_ID
from airflow_provider_anthropix.hooks.config_cache import AsyncConfigCache
from airflow_provider_anthropix.hooks.settings import ConnectionSettingsError, config_from_connection

if TYPE_CHECKING:
    # The clients pull in requests / httpx: imported when a task or trigger first calls the
    # API, never when a DAG file that names an operator is parsed.
    from airflow_provider_anthropix.api.async_client import AsyncClient
    from airflow_provider_anthropix.api.sync_client import SyncClient

_config_cache = AsyncConfigCache()

# Model ids per (connection id, connection settings, UTC day): the list changes a few times a
# year, and a DAG with 500 creates a day should ask once, not 500 times. Aliases that the
# API resolved for us are remembered with it.
_models_cache: dict[tuple[Any, ...], set[str]] = {}
_models_lock = threading.Lock()


class AnthropixHook(BaseHook):
    """Talks to the Anthropic Message Batches API with the key and settings of an Airflow connection.

    Connection fields: **password** = API key, **host** = base URL (default
    ``https://api.anthropic.com``), **extra** = ``anthropic_version``, ``anthropic_beta`` (list),
    ``workspace_id``, ``timeout`` (seconds, or ``[connect, read]``), ``max_retries``, ``proxies``.

    The sync client is built on first use and cached; DAG parsing never opens a connection.
    The async client (for triggers) is shared per event loop: see :meth:`aget_async_client`.

    :param anthropix_conn_id: the Airflow connection id.
    """

    conn_name_attr = "anthropix_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "anthropix"
    hook_name = "Anthropix"

    def __init__(self, anthropix_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.anthropix_conn_id = anthropix_conn_id

    def __repr__(self) -> str:
        return f"AnthropixHook(anthropix_conn_id={self.anthropix_conn_id!r})"

    # -- clients -----------------------------------------------------------------------------

    @cached_property
    def config(self) -> ClientConfig:
        """Client settings from the connection; raises :class:`ConnectionSettingsError` naming the bad field."""
        return config_from_connection(self.anthropix_conn_id, self.get_connection(self.anthropix_conn_id))

    @cached_property
    def client(self) -> SyncClient:
        from airflow_provider_anthropix.api.sync_client import SyncClient

        return SyncClient(self.config)

    def get_conn(self) -> SyncClient:
        return self.client

    @classmethod
    async def aget_config(cls, anthropix_conn_id: str = default_conn_name) -> ClientConfig:
        """Client settings read without blocking the event loop (for triggers)."""
        connection = await cls.aget_connection(anthropix_conn_id)
        return config_from_connection(anthropix_conn_id, connection)

    @classmethod
    async def aget_async_client(cls, anthropix_conn_id: str = default_conn_name) -> AsyncClient:
        """The async client shared by every trigger of this connection on the running loop.

        The connection is read at most once a minute per loop (see :class:`AsyncConfigCache`):
        thousands of triggers starting together must not each read the secret.
        """
        from airflow_provider_anthropix.api.async_client import shared_async_client

        return shared_async_client(await _config_cache.get(anthropix_conn_id, cls.aget_config))

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    # -- the API, through the sync client ----------------------------------------------------

    def create_batch(self, requests: Sequence[Mapping[str, Any]] | EncodedBody) -> MessageBatch:
        from airflow_provider_anthropix import metrics

        batch = self.client.create_batch(requests)
        tags = {"conn_id": self.anthropix_conn_id}
        metrics.incr("anthropix.batches.created", tags=tags)
        metrics.incr("anthropix.requests.submitted", batch.request_counts.total, tags=tags)
        return batch

    def get_batch(self, batch_id: str) -> MessageBatch:
        return self.client.get_batch(batch_id)

    def list_batches(self, limit: int = 20, before_id: str | None = None, after_id: str | None = None) -> BatchPage:
        return self.client.list_batches(limit=limit, before_id=before_id, after_id=after_id)

    def iter_batches(self, page_size: int = 100) -> Iterator[MessageBatch]:
        return self.client.iter_batches(page_size=page_size)

    def cancel_batch(self, batch_id: str) -> MessageBatch:
        from airflow_provider_anthropix import metrics

        batch = self.client.cancel_batch(batch_id)
        metrics.incr("anthropix.batches.canceled", tags={"conn_id": self.anthropix_conn_id})
        return batch

    def delete_batch(self, batch_id: str) -> DeletedMessageBatch:
        return self.client.delete_batch(batch_id)

    def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        return self.client.iter_result_bytes(batch, chunk_size=chunk_size)

    def iter_results(self, batch: MessageBatch | str) -> Iterator[dict[str, Any]]:
        return self.client.iter_results(batch)

    def get_results(self, batch: MessageBatch | str) -> list[dict[str, Any]]:
        return self.client.get_results(batch)

    # -- tokens and models -------------------------------------------------------------------

    def count_tokens(self, params: Mapping[str, Any]) -> int:
        """Input tokens of one request's params (free, rate limited like other calls)."""
        return self.client.count_tokens(params)

    def list_models(self) -> list[ModelInfo]:
        """Every model the connection's key may use (all pages), newest first. Not cached."""
        return self.client.all_models()

    def _models_key(self) -> tuple[Any, ...]:
        return (self.anthropix_conn_id, self.config.cache_key(), pendulum.now("UTC").to_date_string())

    def known_models(self) -> set[str]:
        """The ids of :meth:`list_models`, cached per connection and UTC day (and per process)."""
        key = self._models_key()
        with _models_lock:
            cached = _models_cache.get(key)
        if cached is not None:
            return set(cached)
        ids = {model.id for model in self.list_models()}
        with _models_lock:
            for stale in [k for k in _models_cache if k[:2] == key[:2]]:
                del _models_cache[stale]
            _models_cache[key] = set(ids)
        return ids

    def model_exists(self, model: str) -> bool:
        """Whether the API knows ``model``: in the (cached) list, or an alias ``GET /v1/models/{id}`` resolves."""
        if model in self.known_models():
            return True
        try:
            resolved = self.client.get_model(model)
        except NotFoundError:
            return False
        with _models_lock:
            _models_cache.setdefault(self._models_key(), set()).update({model, resolved.id})
        return True

    # -- UI ----------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Called by the UI's Test button: one cheap list call, and a message that says what failed.

        Every message is redacted with the connection's secrets: a proxy or server that echoes
        the key in an error body must not get it shown in the UI.
        """
        ok, message = self._probe()
        if "config" in self.__dict__:
            message = self.config.redactor()(message)
        return ok, message

    def _probe(self) -> tuple[bool, str]:
        try:
            config = self.config
            page = self.client.list_batches(limit=1)
        except ConnectionSettingsError as exc:
            return False, str(exc)
        except AuthenticationError as exc:
            return False, f"The API key was rejected (HTTP 401, request-id {exc.request_id}): check the password field."
        except PermissionDeniedError as exc:
            return False, f"The API key may not list batches (HTTP 403): {exc.message}"
        except BadRequestError as exc:
            hint = " Check extra.anthropic_version." if "version" in exc.message.lower() else ""
            return False, f"The API rejected the request (HTTP 400): {exc.message}.{hint}"
        except AnthropixConnectionError as exc:
            # The error names the URL, the connection and the fix.
            return False, f"Could not reach the API: {exc}"
        except AnthropixAPIError as exc:
            return False, f"The API answered with an error: {exc}"
        except AnthropixError as exc:
            return False, str(exc)
        newest = page.data[0].id if page.data else "none yet"
        return True, (
            f"Connected to {config.base_url} with API version {config.anthropic_version}; newest batch: {newest}."
        )

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """For Airflow versions that read the form from the hook rather than from provider info."""
        from airflow_provider_anthropix.get_provider_info import UI_FIELD_BEHAVIOUR

        return UI_FIELD_BEHAVIOUR

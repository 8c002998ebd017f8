"""What each API call sends, independent of the HTTP library.

Both clients turn a :class:`Call` into a request with their own library and feed the
answer back through :func:`raise_for_response`; everything about paths, parameters,
idempotency and the results-host check lives here once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.errors import ResultsHostError, error_from_response
from airflow_provider_anthropix.api.limits import MAX_LIST_LIMIT, MIN_LIST_LIMIT
from airflow_provider_anthropix.api.models import EncodedBody, MessageBatch
from airflow_provider_anthropix.api.retry import parse_retry_after

BATCHES_PATH = "/v1/messages/batches"


@dataclass(frozen=True)
class Call:
    """One logical API call: retried as a whole by the client's retry loop."""

    name: str
    method: str
    url: str
    params: Mapping[str, Any] | None = None
    json_body: bytes | None = None
    encoded_body: EncodedBody | None = None
    idempotent: bool = True


def _batch_path(config: ClientConfig, batch_id: str) -> str:
    if not batch_id or not isinstance(batch_id, str):
        raise ValueError(f"a batch id is required, got {batch_id!r}")
    return f"{config.base_url}{BATCHES_PATH}/{quote(batch_id, safe='')}"


def create_call(config: ClientConfig, requests: Sequence[Mapping[str, Any]] | EncodedBody) -> Call:
    """A create: never idempotent (see the retry policy)."""
    url = f"{config.base_url}{BATCHES_PATH}"
    if isinstance(requests, EncodedBody):
        return Call("create", "POST", url, encoded_body=requests, idempotent=False)
    body = json.dumps({"requests": list(requests)}, separators=(",", ":"), ensure_ascii=False).encode()
    return Call("create", "POST", url, json_body=body, idempotent=False)


def get_call(config: ClientConfig, batch_id: str) -> Call:
    return Call("retrieve", "GET", _batch_path(config, batch_id))


def list_call(config: ClientConfig, limit: int = 20, before_id: str | None = None, after_id: str | None = None) -> Call:
    if not MIN_LIST_LIMIT <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be between {MIN_LIST_LIMIT} and {MAX_LIST_LIMIT}, got {limit}")
    params: dict[str, Any] = {"limit": limit}
    if before_id:
        params["before_id"] = before_id
    if after_id:
        params["after_id"] = after_id
    return Call("list", "GET", f"{config.base_url}{BATCHES_PATH}", params=params)


def cancel_call(config: ClientConfig, batch_id: str) -> Call:
    # Cancelling twice has the same effect as once: safe to retry.
    return Call("cancel", "POST", _batch_path(config, batch_id) + "/cancel")


def delete_call(config: ClientConfig, batch_id: str) -> Call:
    return Call("delete", "DELETE", _batch_path(config, batch_id))


def results_url_for(config: ClientConfig, batch: MessageBatch | str) -> str:
    """The URL to download results from, refusing URLs on another host.

    ``batch`` is a :class:`MessageBatch`, a batch id or a results URL. The key is only ever
    sent to the configured API host: a ``results_url`` elsewhere raises
    :class:`ResultsHostError` instead of being fetched with the key.
    """
    if isinstance(batch, MessageBatch):
        if not batch.results_url:
            raise ValueError(
                f"batch {batch.id} has no results yet (processing_status={batch.processing_status}); "
                "results are available once it has ended"
            )
        url = batch.results_url
    elif isinstance(batch, str) and batch.startswith(("http://", "https://")):
        url = batch
    else:
        return _batch_path(config, str(batch)) + "/results"
    if _origin(url) != _origin(config.base_url):
        raise ResultsHostError(
            f"results_url origin {_show(_origin(url))} differs from the connection's API origin "
            f"{_show(_origin(config.base_url))}; refusing to send the API key there"
        )
    return url


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    return (parts.scheme, (parts.hostname or "").lower(), parts.port or default_port)


def _show(origin: tuple[str, str, int | None]) -> str:
    scheme, host, port = origin
    return f"{scheme}://{host}:{port}"


def raise_for_response(status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Raise the mapped exception for an error status; return for 2xx."""
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise error_from_response(
            status, headers, b"unexpected redirect from the API; redirects are not followed with the key"
        )
    raise error_from_response(status, headers, body, retry_after=parse_retry_after(headers))


def parse_json(body: bytes) -> Any:
    return json.loads(body)

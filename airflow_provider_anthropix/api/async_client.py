"""Non-blocking client on ``httpx.AsyncClient``: for triggers, which share one event loop.

A triggerer runs thousands of triggers on one loop, so nothing here blocks: no threads,
no ``time.sleep``. Triggers of the same connection on the same loop share one client (and
its connection pool) through :func:`shared_async_client`, instead of one client each.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from airflow_provider_anthropix.api import calls
from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.errors import AnthropixConnectionError, AnthropixError
from airflow_provider_anthropix.api.lines import LineSplitter, parse_result_line
from airflow_provider_anthropix.api.models import (
    BatchPage,
    DeletedMessageBatch,
    EncodedBody,
    MessageBatch,
    ModelInfo,
    ModelPage,
)
from airflow_provider_anthropix.api.origin import Origin
from airflow_provider_anthropix.api.redact import Redactor
from airflow_provider_anthropix.api.resume import ResumeState

log = logging.getLogger(__name__)

#: Connections one shared client keeps open; polls are tiny, so a modest pool serves thousands of triggers.
MAX_CONNECTIONS = 64
POOL_LIMITS = httpx.Limits(
    max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS, keepalive_expiry=30.0
)


#: httpx errors raised before a byte of the request left: httpcore reports TCP and TLS set-up
#: failures as ConnectError, and a request waiting for a pool slot or a connect has sent nothing.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _translate(
    exc: httpx.HTTPError, call_name: str, config: ClientConfig, redact: Redactor
) -> AnthropixConnectionError:
    """Map an httpx failure to our tree, noting whether the request may have reached the server."""
    never_sent = isinstance(exc, _NEVER_SENT)
    timeout = isinstance(exc, httpx.TimeoutException)
    return calls.connection_error(call_name, config, redact, exc, never_sent=never_sent, timeout=timeout)


async def _aiter_body(body: EncodedBody) -> AsyncIterator[bytes]:
    for chunk in body.chunks():
        yield chunk


class AsyncClient:
    """The Message Batches API over ``httpx.AsyncClient``; same methods as :class:`SyncClient`, awaited."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._policy = config.retry_policy()
        self._redact = config.redactor()
        self._sleep = sleep
        # Calls wait here rather than in httpcore's pool queue: the pool scans its whole queue
        # for every request, so thousands of queued polls (a triggerer restarting with
        # thousands of triggers) cost quadratic CPU on the event loop; a semaphore is O(1).
        self._in_flight = asyncio.Semaphore(MAX_CONNECTIONS)
        self._http = http or httpx.AsyncClient(
            headers=config.headers(),
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
            limits=POOL_LIMITS,
            mounts=_proxy_mounts(config.proxies),
            follow_redirects=False,
            trust_env=True,  # like requests in the sync client: HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE apply to both
        )

    def __repr__(self) -> str:
        return self._redact(
            f"AsyncClient(base_url={self.config.base_url!r}, version={self.config.anthropic_version!r})"
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    # -- transport ---------------------------------------------------------------------------

    async def _attempt(self, call: calls.Call, *, stream: bool, headers: Mapping[str, str] | None) -> httpx.Response:
        request_headers = dict(headers or {})
        content: Any = None
        if call.json_body is not None:
            content = call.json_body
            request_headers["content-type"] = "application/json"
        elif call.encoded_body is not None:
            content = _aiter_body(call.encoded_body)
            request_headers["content-type"] = "application/json"
            request_headers["content-length"] = str(call.encoded_body.size)
        try:
            request = self._http.build_request(
                call.method, call.url, params=call.params, content=content, headers=request_headers
            )
            sent_to = Origin.of(request.url.scheme, request.url.host, request.url.port)
        except (httpx.InvalidURL, httpx.HTTPError, ValueError, UnicodeError, TypeError) as exc:
            raise calls.refuse_unsendable(call, self.config, self._redact, exc) from None
        # The origin httpx itself parsed from the request it is about to send (httpcore connects to it).
        calls.check_origin(call, sent_to, self.config, self._redact)
        try:
            if stream:
                response = await self._http.send(request, stream=True)
            else:
                async with self._in_flight:
                    response = await self._http.send(request)
            if response.status_code >= 300:
                body = await response.aread()
                await response.aclose()
                calls.raise_for_response(response.status_code, response.headers, body, self._redact)
        except httpx.HTTPError as exc:
            raise _translate(exc, call.name, self.config, self._redact) from None
        except UnicodeError as exc:
            raise AnthropixConnectionError(
                self._redact(
                    f"{call.name}: the request cannot be encoded for HTTP ({type(exc).__name__}); nothing was sent"
                ),
                maybe_sent=False,
            ) from None
        return response

    async def _send(
        self, call: calls.Call, *, stream: bool = False, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        attempt = 0
        waited = 0.0
        while True:
            try:
                return await self._attempt(call, stream=stream, headers=headers)
            except AnthropixError as exc:
                delay = self._policy.next_delay(exc, attempt=attempt, waited=waited, idempotent=call.idempotent)
                if delay is None:
                    raise
                log.warning(
                    "%s failed (%s); retry %d of %d in %.1f s",
                    call.name,
                    exc,
                    attempt + 1,
                    self._policy.max_retries,
                    delay,
                )
                await self._sleep(delay)
                waited += delay
                attempt += 1

    async def _json(self, call: calls.Call) -> Any:
        response = await self._send(call)
        try:
            return calls.parse_json(response.content)
        except (ValueError, RecursionError) as exc:
            raise AnthropixConnectionError(
                self._redact(f"{call.name}: the API's answer is not valid JSON ({exc})")
            ) from None

    # -- batches -----------------------------------------------------------------------------

    async def create_batch(self, requests: Sequence[Mapping[str, Any]] | EncodedBody) -> MessageBatch:
        """Submit a batch. Not retried once it may have reached the server (see the retry policy)."""
        return MessageBatch.from_dict(await self._json(calls.create_call(self.config, requests)))

    async def get_batch(self, batch_id: str) -> MessageBatch:
        return MessageBatch.from_dict(await self._json(calls.get_call(self.config, batch_id)))

    async def list_batches(
        self, limit: int = 20, before_id: str | None = None, after_id: str | None = None
    ) -> BatchPage:
        return BatchPage.from_dict(await self._json(calls.list_call(self.config, limit, before_id, after_id)))

    async def iter_batches(self, page_size: int = 100) -> AsyncIterator[MessageBatch]:
        """Every batch, newest first, fetching pages as the caller goes."""
        after_id: str | None = None
        while True:
            page = await self.list_batches(limit=page_size, after_id=after_id)
            for batch in page.data:
                yield batch
            if not page.has_more or not page.last_id:
                return
            after_id = page.last_id

    async def cancel_batch(self, batch_id: str) -> MessageBatch:
        return MessageBatch.from_dict(await self._json(calls.cancel_call(self.config, batch_id)))

    async def delete_batch(self, batch_id: str) -> DeletedMessageBatch:
        return DeletedMessageBatch.from_dict(await self._json(calls.delete_call(self.config, batch_id)))

    # -- tokens and models -------------------------------------------------------------------

    async def count_tokens(self, params: Mapping[str, Any]) -> int:
        """Input tokens of one request's ``params`` (system prompt and tools included)."""
        data = await self._json(calls.count_tokens_call(self.config, params))
        try:
            return calls.parse_token_count(data)
        except ValueError as exc:
            raise AnthropixConnectionError(self._redact(str(exc))) from None

    async def list_models(
        self, limit: int = 20, before_id: str | None = None, after_id: str | None = None
    ) -> ModelPage:
        return ModelPage.from_dict(await self._json(calls.list_models_call(self.config, limit, before_id, after_id)))

    async def get_model(self, model_id: str) -> ModelInfo:
        """One model; an alias answers with the model it resolves to, an unknown id is a NotFoundError."""
        return ModelInfo.from_dict(await self._json(calls.get_model_call(self.config, model_id)))

    async def all_models(self, page_size: int = 1000) -> list[ModelInfo]:
        """Every model the key may use, newest first."""
        models: list[ModelInfo] = []
        after_id: str | None = None
        while True:
            page = await self.list_models(limit=page_size, after_id=after_id)
            models.extend(page.data)
            if not page.has_more or not page.last_id:
                return models
            after_id = page.last_id

    # -- results -----------------------------------------------------------------------------

    async def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        """The results JSONL as raw chunks, resumed transparently after a break (see ``api.resume``)."""
        url = calls.results_url_for(self.config, batch, redact=self._redact)
        state = ResumeState(self._policy)
        while not state.complete:
            try:
                response = await self._send(
                    calls.Call("results", "GET", url), stream=True, headers=state.request_headers()
                )
                try:
                    skipper = state.start(response.status_code, response.headers)
                    async for chunk in response.aiter_bytes(chunk_size):
                        chunk = skipper.trim(chunk)
                        if chunk:
                            state.received += len(chunk)
                            yield chunk
                finally:
                    await response.aclose()
                return
            except httpx.HTTPError as exc:
                error: AnthropixError = _translate(exc, "results", self.config, self._redact)
            except AnthropixConnectionError as exc:
                error = exc
            await self._sleep(state.next_delay(error))

    async def iter_results(self, batch: MessageBatch | str) -> AsyncIterator[dict[str, Any]]:
        """One parsed dict per results line."""
        splitter = LineSplitter()
        async for chunk in self.iter_result_bytes(batch):
            for line in splitter.feed(chunk):
                yield parse_result_line(line)
        for line in splitter.finish():
            yield parse_result_line(line)

    async def get_results(self, batch: MessageBatch | str) -> list[dict[str, Any]]:
        """All results as a list: for small batches only."""
        return [result async for result in self.iter_results(batch)]


def _proxy_mounts(proxies: Mapping[str, str] | None) -> dict[str, httpx.AsyncBaseTransport] | None:
    if not proxies:
        return None
    return {f"{scheme}://": httpx.AsyncHTTPTransport(proxy=url, limits=POOL_LIMITS) for scheme, url in proxies.items()}


# One client per (event loop, connection settings). Keyed weakly by loop so a closed loop's
# clients go away with it; the triggerer's loop lives as long as the process.
_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def shared_async_client(config: ClientConfig) -> AsyncClient:
    """The client every trigger with these settings on the running loop should use.

    Sharing one pool is what lets a single triggerer poll thousands of batches: one client
    per trigger costs a pool, TLS sessions and tens of KB each. Callers must not close the
    shared client (others are using it); it lives as long as its event loop.
    """
    loop = asyncio.get_running_loop()
    clients = _shared.setdefault(loop, {})
    key = config.cache_key()
    client = clients.get(key)
    if client is None or client.is_closed:
        client = AsyncClient(config)
        clients[key] = client
    return client

"""Non-blocking client on ``httpx.AsyncClient``: for triggers, which share one event loop.

A triggerer runs thousands of triggers on one loop, so nothing here blocks: no threads,
no ``time.sleep``. Triggers of the same connection on the same loop share one client (and
its connection pool) through :func:`shared_async_client`, instead of one client each.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import httpx

from airflow_provider_anthropix.api import bounds, calls, operations
from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.errors import AnthropixConnectionError, AnthropixError
from airflow_provider_anthropix.api.lines import ResultLines
from airflow_provider_anthropix.api.models import EncodedBody, MessageBatch, ModelInfo
from airflow_provider_anthropix.api.operations import Operation, Pager
from airflow_provider_anthropix.api.origin import Origin
from airflow_provider_anthropix.api.resume import ResumeState

P = ParamSpec("P")
T = TypeVar("T")

#: Connections one shared client keeps open; polls are tiny, so a modest pool serves thousands of triggers.
MAX_CONNECTIONS = 64
POOL_LIMITS = httpx.Limits(
    max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS, keepalive_expiry=30.0
)


#: httpx's transport failures. httpcore reports TCP and TLS set-up failures as ConnectError, and
#: a request waiting for a pool slot or a connect has sent nothing.
_TRANSPORT = calls.TransportErrors(
    never_sent=(httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout),
    timeouts=(httpx.TimeoutException,),
)


async def _aiter_body(body: EncodedBody) -> AsyncIterator[bytes]:
    for chunk in body.chunks():
        yield chunk


class AsyncClient(operations.AsyncClientBase):
    """The Message Batches API over ``httpx.AsyncClient``; same methods as :class:`SyncClient`, awaited."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(config)
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
        content: Any = call.json_body
        if call.encoded_body is not None:
            content = _aiter_body(call.encoded_body)
        try:
            request = self._http.build_request(
                call.method, call.url, params=call.params, content=content, headers=calls.body_headers(call, headers)
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
        except (httpx.HTTPError, UnicodeError) as exc:
            raise _TRANSPORT.translate(exc, call.name, self.config, self._redact) from None
        return response

    async def _send(
        self, call: calls.Call, *, stream: bool = False, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        retries = self._retries(call)
        bound = bounds.current()
        while True:
            if bound is not None:
                bound.check(call.name)
            try:
                if bound is None:
                    return await self._attempt(call, stream=stream, headers=headers)
                # The whole attempt, headers and body, ends by the check's deadline: a server
                # that drips bytes resets httpx's read timeout, not this one.
                try:
                    return await asyncio.wait_for(
                        self._attempt(call, stream=stream, headers=headers), timeout=bound.remaining()
                    )
                except asyncio.TimeoutError:
                    raise bound.error(call.name) from None
            except AnthropixError as exc:
                delay = retries.next_delay(exc)
                bounds.sleep_allowed(bound, delay, call.name, exc)
                await self._sleep(delay)

    async def _run(self, operation: Operation[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        call = operation.build(self.config, *args, **kwargs)
        response = await self._send(call)
        return operation.answer(call, response.status_code, response.content, self)

    async def _walk(
        self,
        list_page: Callable[..., Awaitable[operations.Page[T]]],
        page_size: int,
        what: str,
        max_pages: int | None,
    ) -> AsyncIterator[T]:
        pager = Pager(what, max_pages=max_pages, redact=self._redact)
        while pager.more:
            for item in pager.take(await list_page(limit=page_size, after_id=pager.after_id)):
                yield item

    def iter_batches(self, page_size: int = 100, max_pages: int | None = None) -> AsyncIterator[MessageBatch]:
        """Every batch, newest first, fetching pages as the caller goes (a cursor that does not advance is refused)."""
        return self._walk(self.list_batches, page_size, "the batch list", max_pages)

    async def all_models(self, page_size: int = 1000, max_pages: int = bounds.MAX_MODEL_PAGES) -> list[ModelInfo]:
        """Every model the key may use, newest first; at most ``max_pages`` pages (see :class:`Pager`)."""
        return [model async for model in self._walk(self.list_models, page_size, "the model list", max_pages)]

    # -- results -----------------------------------------------------------------------------

    async def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        """The results JSONL as raw chunks, resumed transparently after a break (see ``api.resume``)."""
        call = calls.results_call(self.config, batch, self._redact)
        state = ResumeState(self._policy)
        while not state.complete:
            try:
                response = await self._send(call, stream=True, headers=state.request_headers())
                try:
                    state.start(response.status_code, response.headers)
                    async for chunk in response.aiter_bytes(chunk_size):
                        if chunk := state.take(chunk):
                            yield chunk
                finally:
                    await response.aclose()
                return
            except httpx.HTTPError as exc:
                error: AnthropixError = _TRANSPORT.translate(exc, call.name, self.config, self._redact)
            except AnthropixConnectionError as exc:
                error = exc
            await self._sleep(state.next_delay(error))

    async def iter_results(self, batch: MessageBatch | str) -> AsyncIterator[dict[str, Any]]:
        """One parsed dict per results line."""
        lines = ResultLines()
        async for chunk in self.iter_result_bytes(batch):
            for result in lines.feed(chunk):
                yield result
        for result in lines.finish():
            yield result

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

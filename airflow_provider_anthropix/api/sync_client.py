"""Blocking client on a pooled ``requests.Session``: for workers (operators, poke-mode sensors).

Only the sending is here; what each method sends and how its answer is read are the
shared :mod:`~airflow_provider_anthropix.api.operations`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

import requests
from requests import exceptions as rex
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_exceptions
from urllib3 import poolmanager
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import parse_url

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


class _SizedChunks:
    """An iterable body with a length, so requests sends content-length instead of chunked encoding."""

    def __init__(self, body: EncodedBody) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body.chunks())

    def __len__(self) -> int:
        return self._body.size


#: requests' transport failures; urllib3's errors (along requests' chain ``ConnectionError`` ->
#: ``MaxRetryError.reason`` -> ...) raised before a byte left: no TCP connection, no name, a connect timeout.
_TRANSPORT = calls.TransportErrors(
    never_sent=(rex.ConnectTimeout, urllib3_exceptions.NewConnectionError, urllib3_exceptions.ConnectTimeoutError),
    timeouts=(rex.Timeout,),
)


class _WatchedHTTPPool(HTTPConnectionPool):
    """A pool that shows each connection it hands out to the attempt's watchdog (see ``api.bounds``)."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)
        bounds.watch_connection(connection)
        return connection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)
        bounds.watch_connection(connection)
        return connection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def _watch_pools(manager: Any) -> Any:
    """Make ``manager`` build watched pools, unless it builds pools of its own kind (SOCKS)."""
    if getattr(manager, "pool_classes_by_scheme", None) == poolmanager.pool_classes_by_scheme:
        manager.pool_classes_by_scheme = _WATCHED_POOLS
    return manager


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, with pools whose connections a deadline can cut (direct and through a proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return _watch_pools(super().proxy_manager_for(proxy, **proxy_kwargs))


def _sent_to(prepared_url: str | None) -> Origin:
    """The origin urllib3 will connect to for this prepared URL (the adapter parses it the same way)."""
    parsed = parse_url(prepared_url or "")
    return Origin.of(parsed.scheme, parsed.host, parsed.port)


class SyncClient(operations.SyncClientBase):
    """The Message Batches API over ``requests``, with the shared retry policy and error mapping.

    One instance holds one connection pool; reuse it for many calls and close it when done.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(config)
        self._sleep = sleep
        if session is None:
            session = requests.Session()
            session.mount("http://", _WatchedAdapter())
            session.mount("https://", _WatchedAdapter())
        self._session = session
        self._session.headers.update(config.headers())
        if config.proxies:
            self._session.proxies.update(config.proxies)
        self._timeout = (config.connect_timeout, config.read_timeout)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _attempt(self, call: calls.Call, *, stream: bool, headers: Mapping[str, str] | None) -> requests.Response:
        data: Any = call.json_body
        if call.encoded_body is not None:
            data = _SizedChunks(call.encoded_body)
        try:
            # Prepared here rather than inside Session.request so the URL checked is the URL sent.
            prepared = self._session.prepare_request(
                requests.Request(
                    call.method, call.url, params=call.params, data=data, headers=calls.body_headers(call, headers)
                )
            )
            sent_to = _sent_to(prepared.url)
        except (rex.RequestException, ValueError, UnicodeError) as exc:
            raise calls.refuse_unsendable(call, self.config, self._redact, exc) from None
        calls.check_origin(call, sent_to, self.config, self._redact)
        settings = self._session.merge_environment_settings(prepared.url, {}, stream, None, None)
        bound = bounds.current()
        timeout = self._timeout if bound is None else (bound.timeout(self._timeout[0]), bound.timeout(self._timeout[1]))
        # Under a check's deadline a watchdog cuts the socket when it passes: headers and body
        # (read inside send unless streamed) cannot be dripped past it.
        with bounds.watched(bound) as dog:
            try:
                response = self._session.send(prepared, timeout=timeout, allow_redirects=False, **settings)
                if response.status_code >= 300:
                    body = response.content
                    response.close()
                    calls.raise_for_response(response.status_code, response.headers, body, self._redact)
            except (rex.RequestException, UnicodeError) as exc:
                if bound is not None and bound.expired():
                    raise bound.error(call.name) from None
                raise _TRANSPORT.translate(exc, call.name, self.config, self._redact) from None
            if dog is not None and dog.fired:
                # A cut in the headers can look like their end to http.client: an answer read
                # while the watchdog fired is not trusted, whatever its status.
                response.close()
                raise bound.error(call.name)  # type: ignore[union-attr]
        return response

    def _send(
        self, call: calls.Call, *, stream: bool = False, headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        retries = self._retries(call)
        bound = bounds.current()
        while True:
            if bound is not None:
                bound.check(call.name)
            try:
                return self._attempt(call, stream=stream, headers=headers)
            except AnthropixError as exc:
                delay = retries.next_delay(exc)
                bounds.sleep_allowed(bound, delay, call.name, exc)
                self._sleep(delay)

    def _run(self, operation: Operation[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        call = operation.build(self.config, *args, **kwargs)
        response = self._send(call)
        return operation.answer(call, response.status_code, response.content, self)

    def _walk(
        self, list_page: Callable[..., operations.Page[T]], page_size: int, what: str, max_pages: int | None
    ) -> Iterator[T]:
        pager = Pager(what, max_pages=max_pages, redact=self._redact)
        while pager.more:
            yield from pager.take(list_page(limit=page_size, after_id=pager.after_id))

    def iter_batches(self, page_size: int = 100, max_pages: int | None = None) -> Iterator[MessageBatch]:
        """Every batch, newest first, fetching pages as the caller goes (a cursor that does not advance is refused)."""
        return self._walk(self.list_batches, page_size, "the batch list", max_pages)

    def all_models(self, page_size: int = 1000, max_pages: int = bounds.MAX_MODEL_PAGES) -> list[ModelInfo]:
        """Every model the key may use, newest first; at most ``max_pages`` pages (see :class:`Pager`)."""
        return list(self._walk(self.list_models, page_size, "the model list", max_pages))

    # -- results -----------------------------------------------------------------------------

    def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """The results JSONL as raw chunks, exactly as served.

        A stream that breaks mid-way is reopened (with a ``Range`` request, so a server that
        supports it sends only the rest; otherwise the bytes already delivered are skipped),
        up to ``max_retries`` times: the caller sees one uninterrupted, byte-identical stream.
        """
        call = calls.results_call(self.config, batch, self._redact)
        state = ResumeState(self._policy)
        while not state.complete:
            try:
                response = self._send(call, stream=True, headers=state.request_headers())
                try:
                    state.start(response.status_code, response.headers)
                    for chunk in response.iter_content(chunk_size=chunk_size):
                        if chunk := state.take(chunk):
                            yield chunk
                finally:
                    response.close()
                return
            except rex.RequestException as exc:
                error: AnthropixError = _TRANSPORT.translate(exc, call.name, self.config, self._redact)
            except AnthropixConnectionError as exc:
                error = exc
            self._sleep(state.next_delay(error))

    def iter_results(self, batch: MessageBatch | str) -> Iterator[dict[str, Any]]:
        """One parsed dict per results line."""
        lines = ResultLines()
        for chunk in self.iter_result_bytes(batch):
            yield from lines.feed(chunk)
        yield from lines.finish()

    def get_results(self, batch: MessageBatch | str) -> list[dict[str, Any]]:
        """All results as a list: convenient for small batches only (a large one is ~1 KB per request)."""
        return list(self.iter_results(batch))

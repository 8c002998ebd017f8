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
from urllib3 import exceptions as urllib3_exceptions
from urllib3.util import parse_url

from airflow_provider_anthropix.api import calls, operations
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


def _sent_to(prepared_url: str | None) -> Origin:
    """The origin urllib3 will connect to for this prepared URL (the adapter parses it the same way)."""
    parsed = parse_url(prepared_url or "")
    return Origin.of(parsed.scheme, parsed.host, parsed.port)


class SyncClient(operations.ClientBase, binder=operations.sync_method):
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
        self._session = session or requests.Session()
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
        try:
            response = self._session.send(prepared, timeout=self._timeout, allow_redirects=False, **settings)
            if response.status_code >= 300:
                body = response.content
                response.close()
                calls.raise_for_response(response.status_code, response.headers, body, self._redact)
        except (rex.RequestException, UnicodeError) as exc:
            raise _TRANSPORT.translate(exc, call.name, self.config, self._redact) from None
        return response

    def _send(
        self, call: calls.Call, *, stream: bool = False, headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        retries = self._retries(call)
        while True:
            try:
                return self._attempt(call, stream=stream, headers=headers)
            except AnthropixError as exc:
                self._sleep(retries.next_delay(exc))

    def _run(self, operation: Operation[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        call = operation.build(self.config, *args, **kwargs)
        response = self._send(call)
        return operation.answer(call, response.status_code, response.content, self)

    def _walk(self, list_page: Callable[..., operations.Page[T]], page_size: int) -> Iterator[T]:
        pager = Pager()
        while pager.more:
            yield from pager.take(list_page(limit=page_size, after_id=pager.after_id))

    def iter_batches(self, page_size: int = 100) -> Iterator[MessageBatch]:
        """Every batch, newest first, fetching pages as the caller goes."""
        return self._walk(self.list_batches, page_size)

    def all_models(self, page_size: int = 1000) -> list[ModelInfo]:
        """Every model the key may use, newest first."""
        return list(self._walk(self.list_models, page_size))

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

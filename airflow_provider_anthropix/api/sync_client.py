"""Blocking client on a pooled ``requests.Session``: for workers (operators, poke-mode sensors)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import requests
from requests import exceptions as rex
from urllib3 import exceptions as urllib3_exceptions
from urllib3.util import parse_url

from airflow_provider_anthropix.api import calls
from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.errors import (
    AnthropixConnectionError,
    AnthropixError,
)
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


class _SizedChunks:
    """An iterable body with a length, so requests sends content-length instead of chunked encoding."""

    def __init__(self, body: EncodedBody) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body.chunks())

    def __len__(self) -> int:
        return self._body.size


#: urllib3 errors raised before a single byte of the request left: no TCP connection, no name, a connect timeout.
_NEVER_SENT = (urllib3_exceptions.NewConnectionError, urllib3_exceptions.ConnectTimeoutError)


def _never_sent(exc: BaseException) -> bool:
    """Decided by exception type along requests' chain (``ConnectionError`` -> ``MaxRetryError.reason`` -> ...).

    A TLS failure counts as never sent only when it happened inside the handshake: an SSL
    error while reading an answer (the request already left) stays "maybe sent".
    """
    if isinstance(exc, rex.ConnectTimeout):
        return True
    return any(isinstance(error, _NEVER_SENT) for error in calls.exception_chain(exc)) or calls.tls_handshake_failed(
        exc
    )


def _translate(
    exc: rex.RequestException, call_name: str, config: ClientConfig, redact: Redactor
) -> AnthropixConnectionError:
    """Map a requests failure to our tree, noting whether the request may have reached the server."""
    never_sent = _never_sent(exc)
    timeout = isinstance(exc, rex.Timeout)
    return calls.connection_error(call_name, config, redact, exc, never_sent=never_sent, timeout=timeout)


def _sent_to(prepared_url: str | None) -> Origin:
    """The origin urllib3 will connect to for this prepared URL (the adapter parses it the same way)."""
    parsed = parse_url(prepared_url or "")
    return Origin.of(parsed.scheme, parsed.host, parsed.port)


class SyncClient:
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
        self.config = config
        self._policy = config.retry_policy()
        self._redact = config.redactor()
        self._sleep = sleep
        self._session = session or requests.Session()
        self._session.headers.update(config.headers())
        if config.proxies:
            self._session.proxies.update(config.proxies)
        self._timeout = (config.connect_timeout, config.read_timeout)

    def __repr__(self) -> str:
        return self._redact(f"SyncClient(base_url={self.config.base_url!r}, version={self.config.anthropic_version!r})")

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _attempt(self, call: calls.Call, *, stream: bool, headers: Mapping[str, str] | None) -> requests.Response:
        request_headers = dict(headers or {})
        data: Any = None
        if call.json_body is not None:
            data = call.json_body
            request_headers["content-type"] = "application/json"
        elif call.encoded_body is not None:
            data = _SizedChunks(call.encoded_body)
            request_headers["content-type"] = "application/json"
        try:
            # Prepared here rather than inside Session.request so the URL checked is the URL sent.
            prepared = self._session.prepare_request(
                requests.Request(call.method, call.url, params=call.params, data=data, headers=request_headers)
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
        except rex.RequestException as exc:
            raise _translate(exc, call.name, self.config, self._redact) from None
        except UnicodeError as exc:
            # http.client encodes the request line and headers before anything is written.
            raise AnthropixConnectionError(
                self._redact(
                    f"{call.name}: the request cannot be encoded for HTTP ({type(exc).__name__}); nothing was sent"
                ),
                maybe_sent=False,
            ) from None
        return response

    def _send(
        self, call: calls.Call, *, stream: bool = False, headers: Mapping[str, str] | None = None
    ) -> requests.Response:
        attempt = 0
        waited = 0.0
        while True:
            try:
                return self._attempt(call, stream=stream, headers=headers)
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
                self._sleep(delay)
                waited += delay
                attempt += 1

    def _json(self, call: calls.Call) -> Any:
        response = self._send(call)
        try:
            return calls.parse_json(response.content)
        except (ValueError, RecursionError) as exc:
            raise AnthropixConnectionError(
                self._redact(f"{call.name}: the API's answer is not valid JSON ({exc})")
            ) from None

    # -- batches -----------------------------------------------------------------------------

    def create_batch(self, requests: Sequence[Mapping[str, Any]] | EncodedBody) -> MessageBatch:
        """Submit a batch. Not retried once it may have reached the server (see the retry policy)."""
        return MessageBatch.from_dict(self._json(calls.create_call(self.config, requests)))

    def get_batch(self, batch_id: str) -> MessageBatch:
        return MessageBatch.from_dict(self._json(calls.get_call(self.config, batch_id)))

    def list_batches(self, limit: int = 20, before_id: str | None = None, after_id: str | None = None) -> BatchPage:
        return BatchPage.from_dict(self._json(calls.list_call(self.config, limit, before_id, after_id)))

    def iter_batches(self, page_size: int = 100) -> Iterator[MessageBatch]:
        """Every batch, newest first, fetching pages as the caller goes."""
        after_id: str | None = None
        while True:
            page = self.list_batches(limit=page_size, after_id=after_id)
            yield from page.data
            if not page.has_more or not page.last_id:
                return
            after_id = page.last_id

    def cancel_batch(self, batch_id: str) -> MessageBatch:
        return MessageBatch.from_dict(self._json(calls.cancel_call(self.config, batch_id)))

    def delete_batch(self, batch_id: str) -> DeletedMessageBatch:
        return DeletedMessageBatch.from_dict(self._json(calls.delete_call(self.config, batch_id)))

    # -- tokens and models -------------------------------------------------------------------

    def count_tokens(self, params: Mapping[str, Any]) -> int:
        """Input tokens of one request's ``params`` (system prompt and tools included)."""
        data = self._json(calls.count_tokens_call(self.config, params))
        try:
            return calls.parse_token_count(data)
        except ValueError as exc:
            raise AnthropixConnectionError(self._redact(str(exc))) from None

    def list_models(self, limit: int = 20, before_id: str | None = None, after_id: str | None = None) -> ModelPage:
        return ModelPage.from_dict(self._json(calls.list_models_call(self.config, limit, before_id, after_id)))

    def get_model(self, model_id: str) -> ModelInfo:
        """One model; an alias answers with the model it resolves to, an unknown id is a NotFoundError."""
        return ModelInfo.from_dict(self._json(calls.get_model_call(self.config, model_id)))

    def all_models(self, page_size: int = 1000) -> list[ModelInfo]:
        """Every model the key may use, newest first."""
        models: list[ModelInfo] = []
        after_id: str | None = None
        while True:
            page = self.list_models(limit=page_size, after_id=after_id)
            models.extend(page.data)
            if not page.has_more or not page.last_id:
                return models
            after_id = page.last_id

    # -- results -----------------------------------------------------------------------------

    def iter_result_bytes(self, batch: MessageBatch | str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """The results JSONL as raw chunks, exactly as served.

        A stream that breaks mid-way is reopened (with a ``Range`` request, so a server that
        supports it sends only the rest; otherwise the bytes already delivered are skipped),
        up to ``max_retries`` times: the caller sees one uninterrupted, byte-identical stream.
        """
        url = calls.results_url_for(self.config, batch, redact=self._redact)
        state = ResumeState(self._policy)
        while not state.complete:
            try:
                response = self._send(calls.Call("results", "GET", url), stream=True, headers=state.request_headers())
                try:
                    skipper = state.start(response.status_code, response.headers)
                    for chunk in response.iter_content(chunk_size=chunk_size):
                        chunk = skipper.trim(chunk)
                        if chunk:
                            state.received += len(chunk)
                            yield chunk
                finally:
                    response.close()
                return
            except rex.RequestException as exc:
                error: AnthropixError = _translate(exc, "results", self.config, self._redact)
            except AnthropixConnectionError as exc:
                error = exc
            delay = state.next_delay(error)
            self._sleep(delay)

    def iter_results(self, batch: MessageBatch | str) -> Iterator[dict[str, Any]]:
        """One parsed dict per results line."""
        yield from _parse_lines(self.iter_result_bytes(batch))

    def get_results(self, batch: MessageBatch | str) -> list[dict[str, Any]]:
        """All results as a list: convenient for small batches only (a large one is ~1 KB per request)."""
        return list(self.iter_results(batch))


def _parse_lines(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    splitter = LineSplitter()
    for chunk in chunks:
        for line in splitter.feed(chunk):
            yield parse_result_line(line)
    for line in splitter.finish():
        yield parse_result_line(line)

"""What each API call sends, independent of the HTTP library.

Both clients turn a :class:`Call` into a request with their own library and feed the
answer back through :func:`raise_for_response`; everything about paths, parameters,
idempotency, the origin check made before each send (:func:`check_origin`), which
transport failures prove that nothing was sent (:func:`never_sent`) and the wording of
connection failures and malformed answers lives here once.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.errors import (
    AnthropixConnectionError,
    AnthropixResponseError,
    AnthropixTimeoutError,
    ResultsHostError,
    error_from_response,
)
from airflow_provider_anthropix.api.limits import MAX_LIST_LIMIT, MIN_LIST_LIMIT
from airflow_provider_anthropix.api.models import EncodedBody, MessageBatch, count_tokens_body
from airflow_provider_anthropix.api.origin import AmbiguousURLError, Origin, plain_url
from airflow_provider_anthropix.api.redact import Redactor
from airflow_provider_anthropix.api.retry import parse_retry_after

BATCHES_PATH = "/v1/messages/batches"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"


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


def _page_params(limit: int, before_id: str | None, after_id: str | None) -> dict[str, Any]:
    """The query of one page of a listing (batches and models page the same way)."""
    if not MIN_LIST_LIMIT <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be between {MIN_LIST_LIMIT} and {MAX_LIST_LIMIT}, got {limit}")
    params: dict[str, Any] = {"limit": limit}
    if before_id:
        params["before_id"] = before_id
    if after_id:
        params["after_id"] = after_id
    return params


def list_call(config: ClientConfig, limit: int = 20, before_id: str | None = None, after_id: str | None = None) -> Call:
    return Call("list", "GET", f"{config.base_url}{BATCHES_PATH}", params=_page_params(limit, before_id, after_id))


def cancel_call(config: ClientConfig, batch_id: str) -> Call:
    # Cancelling twice has the same effect as once: safe to retry.
    return Call("cancel", "POST", _batch_path(config, batch_id) + "/cancel")


def delete_call(config: ClientConfig, batch_id: str) -> Call:
    return Call("delete", "DELETE", _batch_path(config, batch_id))


def count_tokens_call(config: ClientConfig, params: Mapping[str, Any]) -> Call:
    """Count the input tokens of one request's ``params`` (free; rate limited like other calls).

    A count changes nothing on the server, so it is retried like a GET.
    """
    if not isinstance(params, Mapping) or not params.get("model"):
        raise ValueError("count_tokens needs the params of a request, with a model")
    body = json.dumps(count_tokens_body(params), separators=(",", ":"), ensure_ascii=False).encode()
    return Call("count_tokens", "POST", f"{config.base_url}{COUNT_TOKENS_PATH}", json_body=body)


def list_models_call(
    config: ClientConfig, limit: int = 20, before_id: str | None = None, after_id: str | None = None
) -> Call:
    params = _page_params(limit, before_id, after_id)
    return Call("list_models", "GET", f"{config.base_url}{MODELS_PATH}", params=params)


def get_model_call(config: ClientConfig, model_id: str) -> Call:
    if not model_id or not isinstance(model_id, str):
        raise ValueError(f"a model id is required, got {model_id!r}")
    return Call("get_model", "GET", f"{config.base_url}{MODELS_PATH}/{quote(model_id, safe='')}")


def results_call(config: ClientConfig, batch: MessageBatch | str, redact: Redactor) -> Call:
    """The GET of a batch's results (the URL checked by :func:`results_url_for`)."""
    return Call("results", "GET", results_url_for(config, batch, redact=redact))


def body_headers(call: Call, headers: Mapping[str, str] | None) -> dict[str, str]:
    """``headers`` plus what the call's body needs: its content type, and the length of a streamed one."""
    request_headers = dict(headers or {})
    if call.json_body is not None or call.encoded_body is not None:
        request_headers["content-type"] = "application/json"
    if call.encoded_body is not None:
        request_headers["content-length"] = str(call.encoded_body.size)
    return request_headers


def parse_token_count(data: Any) -> int:
    """``input_tokens`` of a count answer; a malformed answer is an error, not a zero."""
    value = data.get("input_tokens") if isinstance(data, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("count_tokens answered without a token count (no non-negative integer input_tokens)")
    return value


def _is_batch_id(value: str) -> bool:
    # Batch ids are letters, digits, "_" and "-"; anything with ":", "/" or "\\" is treated as a URL.
    return bool(value) and not any(char in value for char in ":/\\")


def results_url_for(config: ClientConfig, batch: MessageBatch | str, *, redact: Redactor | None = None) -> str:
    """The URL to download results from, refusing URLs on another origin or ambiguous ones.

    ``batch`` is a :class:`MessageBatch`, a batch id or a results URL. The key is only ever
    sent to the configured API origin: a ``results_url`` elsewhere, or one that parsers could
    read differently (see :mod:`airflow_provider_anthropix.api.origin`), raises
    :class:`ResultsHostError` instead of being fetched with the key.
    """
    if isinstance(batch, MessageBatch):
        if not batch.results_url:
            raise ValueError(
                f"batch {batch.id} has no results yet (processing_status={batch.processing_status}); "
                "results are available once it has ended"
            )
        url: str = batch.results_url
    elif isinstance(batch, str) and not _is_batch_id(batch):
        url = batch
    else:
        return _batch_path(config, str(batch)) + "/results"
    check_url(url, config, redact=redact, what="results_url")
    return url


def _show_url(url: object, redact: Redactor) -> str:
    text = repr(url)
    text = text if len(text) <= 200 else text[:197] + "..."
    return redact(text)


def check_url(url: str, config: ClientConfig, *, redact: Redactor | None = None, what: str = "URL") -> None:
    """Refuse ``url`` unless it is a plain http(s) URL on the connection's origin (by our strict reading)."""
    redact = redact or config.redactor()
    try:
        origin = plain_url(url)
    except AmbiguousURLError as exc:
        raise ResultsHostError(
            f"{what} {_show_url(url, redact)} {exc}; refusing to send the API key to a URL that HTTP libraries "
            f"may read differently (the connection's API origin is {config.origin})"
        ) from None
    if origin != config.origin:
        raise ResultsHostError(
            f"{what} origin {origin} differs from the connection's API origin {config.origin}; "
            "refusing to send the API key there"
        )


def check_origin(call: Call, sent_to: Origin, config: ClientConfig, redact: Redactor) -> None:
    """The last check before a request carrying the key leaves: both readings must name the API origin.

    ``sent_to`` is the origin as the sending library itself parsed the prepared request
    (urllib3 for requests, ``httpx.URL`` for httpx), so a URL that our strict reading accepts
    but the library reads differently is still refused.
    """
    what = "results_url" if call.name == "results" else f"{call.name} URL"
    check_url(call.url, config, redact=redact, what=what)
    if sent_to != config.origin:
        raise ResultsHostError(
            f"{what} {_show_url(call.url, redact)} would be sent to {sent_to}, not to the connection's API "
            f"origin {config.origin}; refusing to send the API key there"
        )


def refuse_unsendable(call: Call, config: ClientConfig, redact: Redactor, exc: BaseException) -> ResultsHostError:
    """The HTTP library could not even build the request (a malformed URL): nothing was sent."""
    return ResultsHostError(
        f"{call.name}: the URL {_show_url(call.url, redact)} cannot be sent ({type(exc).__name__}); "
        f"refusing it (the connection's API origin is {config.origin})"
    )


# -- connection failures ------------------------------------------------------------------------


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, ``reason``, exceptions in ``args``)."""
    seen: set[int] = set()
    stack = [exc]
    while stack and len(seen) < 64:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [
            getattr(current, "reason", None),
            getattr(current, "original_error", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ]
        stack.extend(item for item in reversed(linked) if isinstance(item, BaseException))


def _in_handshake(error: BaseException) -> bool:
    handshake = ssl.SSLSocket.do_handshake.__code__
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is handshake:
            return True
        tb = tb.tb_next
    return False


def tls_handshake_failed(exc: BaseException) -> bool:
    """Whether ``exc`` wraps a TLS failure that happened while the handshake ran, before any request byte."""
    return any(
        isinstance(error, ssl.SSLCertVerificationError) or (isinstance(error, ssl.SSLError) and _in_handshake(error))
        for error in exception_chain(exc)
    )


def never_sent(exc: BaseException, library_types: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` proves that no byte of the request left, decided by exception type only.

    ``library_types`` are the sending library's errors raised before a request is written (no
    TCP connection, no name, a connect timeout, no pool slot); they are looked for along the
    whole chain, since libraries wrap each other's errors (requests -> urllib3 -> socket). A
    TLS failure counts only when it happened inside the handshake: an SSL error while reading
    an answer (the request already left) stays "maybe sent".
    """
    return any(isinstance(error, library_types) for error in exception_chain(exc)) or tls_handshake_failed(exc)


@dataclass(frozen=True)
class TransportErrors:
    """How one HTTP library reports a failed transport, and its mapping to our exception tree.

    :param never_sent: its errors raised before a request byte is written (see :func:`never_sent`).
    :param timeouts: its timeout errors.
    """

    never_sent: tuple[type[BaseException], ...]
    timeouts: tuple[type[BaseException], ...]

    def translate(
        self, exc: BaseException, call_name: str, config: ClientConfig, redact: Redactor
    ) -> AnthropixConnectionError:
        """Our error for the library's ``exc``, noting whether the request may have reached the server.

        A ``UnicodeError`` from a send is a request line or header that HTTP cannot carry: the
        library refuses it (``http.client`` encodes them before anything is written), so nothing left.
        """
        if isinstance(exc, UnicodeError):
            return AnthropixConnectionError(
                redact(f"{call_name}: the request cannot be encoded for HTTP ({type(exc).__name__}); nothing was sent"),
                maybe_sent=False,
            )
        return connection_error(
            call_name,
            config,
            redact,
            exc,
            never_sent=never_sent(exc, self.never_sent),
            timeout=isinstance(exc, self.timeouts),
        )


def connect_failure_reason(exc: BaseException) -> tuple[str, str]:
    """A short reason and a fix for a failed connection, from the standard-library error it wraps."""
    chain = list(exception_chain(exc))
    for error in chain:
        if isinstance(error, socket.gaierror):
            return "the host name could not be resolved", "check the host name in the connection's host field"
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = error.verify_message or error.reason or "verification failed"
            return (
                f"the server's TLS certificate was not accepted ({detail})",
                "check the host name, or point SSL_CERT_FILE / REQUESTS_CA_BUNDLE at the right CA bundle",
            )
    for error in chain:
        if isinstance(error, ssl.SSLError):
            detail = error.reason or type(error).__name__
            return (
                f"the TLS handshake failed ({detail})",
                "if the server speaks plain HTTP (the local emulator does), use http:// in the host field",
            )
    for error in chain:
        if isinstance(error, ConnectionRefusedError):
            return (
                "connection refused (nothing is listening on that port)",
                "check the port in the host field and that the server is running",
            )
    for error in chain:
        if isinstance(error, TimeoutError):
            return "timed out", "check the host, port and network (firewall, proxy settings)"
    for error in chain:
        if isinstance(error, OSError) and error.strerror:
            return error.strerror, "check the host, port and scheme of the connection"
    return type(exc).__name__, "check the host, port and scheme of the connection"


def connection_error(
    call_name: str,
    config: ClientConfig,
    redact: Redactor,
    exc: BaseException,
    *,
    never_sent: bool,
    timeout: bool = False,
) -> AnthropixConnectionError:
    """The error for a failed transport, naming the origin and connection and (when nothing was sent) the fix."""
    where = config.where()
    cls = AnthropixTimeoutError if timeout else AnthropixConnectionError
    if never_sent:
        reason, fix = connect_failure_reason(exc)
        if timeout:
            reason = "timed out connecting"
        text = f"{call_name}: could not connect to {where}: {reason}; nothing was sent. Fix: {fix}."
    elif timeout:
        text = f"{call_name}: timed out waiting for the answer of {where}"
    else:
        text = (
            f"{call_name}: the connection to {where} broke ({type(exc).__name__}); the request may have been received"
        )
    return cls(redact(text), maybe_sent=not never_sent)


def raise_for_response(status: int, headers: Mapping[str, str], body: bytes, redact: Redactor | None = None) -> None:
    """Raise the mapped exception for an error status (its texts redacted); return for 2xx."""
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise error_from_response(
            status,
            headers,
            b"unexpected redirect from the API; redirects are not followed with the key",
            redact=redact,
        )
    raise error_from_response(status, headers, body, retry_after=parse_retry_after(headers), redact=redact)


def malformed_answer(
    call: Call, status: int, config: ClientConfig, redact: Redactor, problem: str
) -> AnthropixResponseError:
    """The error for a success status whose body is not what ``call`` expects, naming the call and the origin."""
    text = f"{call.name}: {config.where()} answered HTTP {status} with a malformed answer: {problem}"
    if not call.idempotent:
        text += "; the request was received, so what it asked for may have been done: look before sending it again"
    return AnthropixResponseError(redact(text))

"""A server or proxy that echoes the API key in an error must not get it into any text the provider builds.

A loopback server answers every request with an error whose body, message and headers
carry the ``x-api-key`` it received (plainly, JSON-escaped, URL-quoted, in an HTML page).
The key must be absent from the exception (``str``, ``repr``, ``args``, ``body``, kept
headers), from the Airflow error built from it, from ``test_connection()``'s message and
from the clients' retry warnings, for the sync and the async client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

import pytest

from airflow_provider_anthropix.api import (
    AnthropixAPIError,
    AnthropixConnectionError,
    AnthropixError,
    AsyncClient,
    ClientConfig,
    SyncClient,
)

KEY = "sk-ant-echoed-REDACTME-0123456789abcdef"


def _escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


class _Echo(BaseHTTPRequestHandler):
    """Answers ``/{status}/{shape}/...`` with that status and the received key in a body of that shape."""

    def do_GET(self) -> None:
        key = self.headers.get("x-api-key", "")
        _, status, shape, *_ = self.path.split("/")
        if shape == "json":
            body = json.dumps(
                {
                    "type": "error",
                    "error": {"type": f"invalid_{key}", "message": f"bad key {key} (quoted {quote(key)})"},
                }
            ).encode()
        elif shape == "escaped":
            body = ('{"type":"error","error":{"type":"x","message":"got ' + _escaped(key) + '"}}').encode()
        else:
            body = f"<html><body>Proxy error: header x-api-key={key} was refused</body></html>".encode()
        self.send_response(int(status))
        self.send_header("request-id", f"req_{key}")
        self.send_header("x-should-retry", "true" if status.startswith("5") else "false")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


class _Fixed(_Echo):
    """The same echo at one status for every path (the hook probes /v1/messages/batches)."""

    status = "400"

    def do_GET(self) -> None:
        self.path = f"/{self.status}/json/x"
        super().do_GET()


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _texts(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), repr(exc.args)]
    if isinstance(exc, AnthropixAPIError):
        parts += [exc.message, str(exc.request_id), json.dumps(exc.body), repr(exc.headers), exc.error_type]
    return " ".join(parts)


def _assert_clean(text: str) -> None:
    for spelling in (KEY, quote(KEY), "REDACTME"):
        assert spelling not in text, f"the key is in {text[:400]!r}"


def _sync_get(url: str, path: str, retries: int) -> AnthropixError:
    config = ClientConfig(api_key=KEY, base_url=url, max_retries=retries)
    with SyncClient(config, sleep=lambda _s: None) as client:
        with pytest.raises(AnthropixError) as info:
            list(client.iter_result_bytes(url + path))
        return info.value


def _async_get(url: str, path: str, retries: int) -> AnthropixError:
    config = ClientConfig(api_key=KEY, base_url=url, max_retries=retries)

    async def no_sleep(_s: float) -> None:
        return None

    async def attempt() -> AnthropixError:
        async with AsyncClient(config, sleep=no_sleep) as client:
            try:
                async for _ in client.iter_result_bytes(url + path):
                    pass
            except AnthropixError as exc:
                return exc
        raise AssertionError("no error")

    return asyncio.run(attempt())


CLIENTS: dict[str, Callable[[str, str, int], AnthropixError]] = {"sync": _sync_get, "async": _async_get}


@pytest.mark.parametrize("kind", sorted(CLIENTS))
@pytest.mark.parametrize("path", ["/400/json/r", "/400/escaped/r", "/400/html/r", "/500/json/r", "/502/html/r"])
def test_an_echoed_key_is_redacted_from_errors_and_retry_logs(
    kind: str, path: str, echo_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_provider_anthropix"):
        exc = CLIENTS[kind](echo_url, path, 1)
    assert isinstance(exc, AnthropixAPIError)
    assert exc.status == int(path.split("/")[1])
    text = _texts(exc)
    _assert_clean(text)
    assert "[redacted]" in text  # the echo really happened, and was masked
    retries = [r for r in caplog.records if "retry 1 of 1" in r.getMessage()]
    if path.startswith("/5"):
        assert len(retries) == 1  # a 5xx is retried once: the warning that logs the error was written
    for record in caplog.records:
        _assert_clean(record.getMessage())


def test_airflow_error_and_test_connection_carry_no_echoed_key(echo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_anthropix.failures import airflow_error
    from airflow_provider_anthropix.hooks.anthropix import AnthropixHook

    exc = _sync_get(echo_url, "/400/json/r", 0)
    failure = airflow_error(exc, doing="downloading results", conn_id="echo")
    _assert_clean(f"{failure!s} {failure!r}")
    assert "[redacted]" in str(failure)

    for status in ("400", "403", "500", "401"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), type("Fixed", (_Fixed,), {"status": status}))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            conn = {"conn_type": "anthropix", "password": KEY, "host": url, "extra": {"max_retries": 0}}
            monkeypatch.setenv("AIRFLOW_CONN_ECHO", json.dumps(conn))
            ok, message = AnthropixHook("echo").test_connection()
        finally:
            server.shutdown()
            server.server_close()
        assert not ok
        _assert_clean(message)


def test_proxy_credentials_are_not_in_connection_errors() -> None:
    secret = "pr0xy-s3cret-pw"
    proxies = {"http": f"http://proxyuser:{secret}@127.0.0.1:9", "https": f"http://proxyuser:{secret}@127.0.0.1:9"}
    config = ClientConfig(api_key=KEY, base_url="http://127.0.0.2:9", max_retries=0, proxies=proxies)
    for text in (repr(config), str(config.describe()), repr(SyncClient(config))):
        assert secret not in text and KEY not in text
    with SyncClient(config) as client, pytest.raises(AnthropixConnectionError) as info:
        client.list_batches(limit=1)
    assert secret not in _texts(info.value) and KEY not in _texts(info.value)
    assert not info.value.maybe_sent  # the proxy refused the connection: nothing left


class _Straddling(BaseHTTPRequestHandler):
    """``GET /v1/messages/batches/<status>-<kind>-<pad>``: the received key after ``pad`` characters.

    ``kind`` is ``html`` (an error page, kept as an excerpt) or ``json`` (a 200 object that is
    not a batch, a malformed answer). Texts are cut to a couple of hundred characters, so some
    paddings put the cut in the middle of the echoed key.
    """

    def do_GET(self) -> None:
        key = self.headers.get("x-api-key", "")
        status, kind, pad = self.path.rsplit("/", 1)[-1].split("-")
        padding = "x" * int(pad)
        if kind == "json":
            body = json.dumps({"pad": padding, "echo": key}).encode()
        else:
            body = f"<html>{padding}{key} was refused</html>".encode()
        self.send_response(int(status))
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.mark.parametrize("kind", sorted(CLIENTS))
def test_a_key_echoed_across_the_excerpt_cut_leaves_no_fragment(kind: str) -> None:
    """Every text is redacted whole and cut after: a cut first would leave the key's first characters."""
    from airflow_provider_anthropix.api import AnthropixResponseError

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Straddling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    config = ClientConfig(api_key=KEY, base_url=url, max_retries=0)

    def get(batch_id: str) -> AnthropixError:
        if kind == "sync":
            with SyncClient(config) as client, pytest.raises(AnthropixError) as info:
                client.get_batch(batch_id)
            return info.value

        async def attempt() -> AnthropixError:
            async with AsyncClient(config) as client:
                try:
                    await client.get_batch(batch_id)
                except AnthropixError as exc:
                    return exc
            raise AssertionError("no error")

        return asyncio.run(attempt())

    try:
        for pad in range(150, 200, 3):
            for status, shape, expected in (
                ("400", "html", AnthropixAPIError),
                ("200", "json", AnthropixResponseError),
            ):
                exc = get(f"{status}-{shape}-{pad}")
                assert isinstance(exc, expected)
                text = _texts(exc)
                _assert_clean(text)
                assert KEY[:10] not in text, f"a fragment of the key is in {text!r}"
    finally:
        server.shutdown()
        server.server_close()


#: A key with the characters URL quoting changes: "@", "/", "+", ":" and "=".
QUOTABLE_KEY = "sk-ant-api03-AB@cd/EF+gh:IJ=kl-REDACTME-0123456789"
#: How a server or proxy may echo it percent-encoded: quote's and quote_plus's forms with their
#: default and other ``safe`` sets (what other languages' encoders keep), lower-case hex digits,
#: and a form-decoded echo where "+" became a space.
QUOTED_SPELLINGS: dict[str, Callable[[str], str]] = {
    "quote": quote,
    "quote-safe-none": lambda key: quote(key, safe=""),
    "quote_plus": quote_plus,
    "quote_plus-safe-slash": lambda key: quote_plus(key, safe="/"),
    "quote-safe-at-plus": lambda key: quote(key, safe="@+"),
    "encodeURI-like": lambda key: quote(key, safe="@/:"),
    "lower-hex": lambda key: re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(key, safe="")),
    "form-decoded": lambda key: unquote_plus(key),
}


class _QuotedEcho(BaseHTTPRequestHandler):
    """``GET /<spelling>/...``: a 400 whose message carries the received key in that spelling."""

    def do_GET(self) -> None:
        key = self.headers.get("x-api-key", "")
        spelling = self.path.split("/")[1]
        echoed = QUOTED_SPELLINGS[spelling](key)
        message = f"no such key {echoed} (from {spelling})"
        body = json.dumps({"type": "error", "error": {"type": "authentication_error", "message": message}}).encode()
        self.send_response(400)
        self.send_header("content-length", str(len(body)))
        self.send_header("request-id", f"req_{echoed}")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def quoted_echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _QuotedEcho)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", sorted(CLIENTS))
@pytest.mark.parametrize("spelling", sorted(QUOTED_SPELLINGS))
def test_a_key_echoed_url_quoted_is_redacted(kind: str, spelling: str, quoted_echo_url: str) -> None:
    echoed = QUOTED_SPELLINGS[spelling](QUOTABLE_KEY)
    assert echoed != QUOTABLE_KEY  # the spelling really differs from the key as sent
    config = ClientConfig(api_key=QUOTABLE_KEY, base_url=quoted_echo_url, max_retries=0)
    path = f"/{spelling}/r"
    if kind == "sync":
        with SyncClient(config) as client, pytest.raises(AnthropixAPIError) as info:
            list(client.iter_result_bytes(quoted_echo_url + path))
        exc: AnthropixError = info.value
    else:

        async def attempt() -> AnthropixError:
            async with AsyncClient(config) as client:
                try:
                    async for _ in client.iter_result_bytes(quoted_echo_url + path):
                        pass
                except AnthropixError as error:
                    return error
            raise AssertionError("no error")

        exc = asyncio.run(attempt())
    text = _texts(exc)
    assert f"(from {spelling})" in text  # the message did come through
    assert echoed not in text and QUOTABLE_KEY not in text and "REDACTME" not in text, text
    assert "[redacted]" in text

"""The API key only ever goes to the connection's origin, as the library that sends the request parses it.

A ``results_url`` comes from the server (or from whoever can forge a batch object), so it
is hostile input. Each value of the table below is fed to the sync client, the async
client and ``FetchBatchResultsOperator``; a raw TCP listener on another loopback port
records every byte it receives. It must receive nothing, and the provider must raise
:class:`ResultsHostError` before any request leaves. The values are the parser
differentials between ``urllib.parse``, urllib3 (requests) and httpx, userinfo tricks,
scheme-relative and backslash forms, a trailing dot, another port or scheme, non-ASCII and
control characters. docs/reliability.md ("Hostile results_url table") says what each
library makes of each value.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from airflow_provider_anthropix.api import (
    AnthropixAPIError,
    AsyncClient,
    ClientConfig,
    MessageBatch,
    ResultsHostError,
    SyncClient,
    calls,
)
from tests.support.http import QuietHandler
from tests.support.payloads import ended_batch_json as _ended

KEY = "sk-ant-hostile-url-KEYCANARY-0123456789abcdef"
RESULTS = "/v1/messages/batches/msgbatch_forged/results"
LINE = b'{"custom_id":"a","result":{"type":"succeeded"}}\n'


class RawListener:
    """A TCP server that records the raw bytes of every connection, whatever they are.

    An HTTP server would drop a malformed request without showing it to the test, yet the
    key would have reached it; the raw bytes cannot hide anything.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.received: list[bytes] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(2)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                body = b'{"custom_id":"evil","result":{"type":"succeeded"}}\n'
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            finally:
                self.received.append(data)
                conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


class _Api(QuietHandler):
    """The connection's API: retrieve answers a batch whose results_url is ``forged``; results redirect."""

    forged: list[str]
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.path == "/v1/messages/batches/msgbatch_forged":
            body = json.dumps(_ended(self.forged[0])).encode()
            self.reply(200, {"content-type": "application/json"}, body)
        elif self.path == "/v1/messages/batches/msgbatch_redirect/results":
            self.reply(302, {"location": self.forged[0]}, b"")
        elif self.path.split("?")[0] == RESULTS:
            self.reply(200, {}, LINE)
        else:
            self.reply(404, {}, b"{}")


class Servers:
    def __init__(self) -> None:
        self.evil = RawListener()
        self.forged: list[str] = [""]
        self.api_seen: list[str] = []
        handler = type("Api", (_Api,), {"forged": self.forged, "seen": self.api_seen})
        self.api = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.api_port: int = self.api.server_address[1]
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        threading.Thread(target=self.api.serve_forever, daemon=True).start()

    def url(self, template: str) -> str:
        return template.format(evil=self.evil.port, api=self.api_port, path=RESULTS)

    def close(self) -> None:
        self.api.shutdown()
        self.api.server_close()
        self.evil.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    both = Servers()
    yield both
    both.close()


@pytest.fixture(autouse=True)
def _quiet(servers: Servers) -> Iterator[None]:
    before = len(servers.evil.received)
    yield
    # Whatever a case did, the foreign listener must never have been contacted.
    seen = servers.evil.received[before:]
    assert seen == [], f"the foreign host was contacted: {seen!r}"
    assert servers.evil.connections == len(servers.evil.received)


#: Hostile results_url values; {api} is the API's port, {evil} the listener's, {path} the results path.
HOSTILE = [
    pytest.param("http://127.0.0.1:{evil}\\@127.0.0.1:{api}{path}", id="backslash-userinfo-requests-differential"),
    pytest.param("http://127.0.0.1:{api}\\@127.0.0.1:{evil}{path}", id="backslash-userinfo-reversed"),
    pytest.param("http://127.0.0.1:{api}@127.0.0.1:{evil}{path}", id="userinfo-port"),
    pytest.param("http://user:pw@127.0.0.1:{api}{path}", id="userinfo-same-origin"),
    pytest.param("http://127.0.0.1:{evil}%5C@127.0.0.1:{api}{path}", id="encoded-backslash-userinfo"),
    pytest.param("//127.0.0.1:{evil}{path}", id="scheme-relative"),
    pytest.param("//127.0.0.1:{api}{path}", id="scheme-relative-same-host"),
    pytest.param("http:\\\\127.0.0.1:{evil}{path}", id="backslashes-for-slashes"),
    pytest.param("http:/127.0.0.1:{api}{path}", id="one-slash"),
    pytest.param("http:127.0.0.1:{api}{path}", id="no-slashes"),
    pytest.param("http://127.0.0.1.:{api}{path}", id="trailing-dot"),
    pytest.param("http://127.0.0.1:{evil}{path}", id="other-port"),
    pytest.param("http://localhost:{evil}{path}", id="other-host-name"),
    pytest.param("http://LOCALHOST:{evil}{path}", id="uppercase-other-host"),
    pytest.param("http://localhost:{api}{path}", id="same-address-other-name"),
    pytest.param("https://127.0.0.1:{api}{path}", id="other-scheme"),
    pytest.param("ftp://127.0.0.1:{api}{path}", id="not-http"),
    pytest.param("http://127.0.0.1:+{evil}{path}", id="plus-port-httpx-differential"),
    pytest.param("http://127.0.0.1:0{api}{path}", id="leading-zero-port"),
    pytest.param("http://127.0.0.1:{api}:{evil}{path}", id="two-ports"),
    pytest.param("http://127.0.0.1%3A{evil}:{api}{path}", id="percent-in-host"),
    pytest.param("http://\uff4cocalhost:{evil}{path}", id="fullwidth-idna-host"),
    pytest.param("http://xn--lcalhost-9za:{evil}{path}", id="punycode-host"),
    pytest.param("http://127.0.0.1:{api}\t{path}", id="tab-in-authority"),
    pytest.param("http://127.0.0.1\n:{api}{path}", id="newline-in-host"),
    pytest.param("http://127.0.0.1:{api}{path}\r\nx-evil: 1", id="crlf-in-path"),
    pytest.param(" http://127.0.0.1:{evil}{path}", id="leading-space"),
    pytest.param("http://127.0.0.1:{api}{path} ", id="trailing-space"),
    pytest.param("http://127.0.0.1:{api}/r\u00e9sults", id="non-ascii-path"),
    pytest.param("http://127.0.0.1:{api}#@127.0.0.1:{evil}{path}", id="fragment-at"),
    pytest.param("http:///{path}", id="empty-host"),
    pytest.param("http://:{api}{path}", id="empty-host-with-port"),
    pytest.param("http://[::ffff:127.0.0.1]:{evil}{path}", id="ipv6-mapped-other-port"),
    pytest.param("http://2130706433:{api}{path}", id="integer-ip"),
    # Values the libraries could not even build a request from: they used to escape the error family.
    pytest.param("http://127.0.0.1:{api}/r\ud800", id="surrogate-in-path-httpx-unicodeencodeerror"),
    pytest.param("http://\u0100:pw@127.0.0.1:{api}{path}", id="non-latin1-userinfo-requests-unicodeencodeerror"),
    pytest.param("http://127.0.0.1:99999{path}", id="port-out-of-range-urlsplit-valueerror"),
    pytest.param("http://[::1{path}", id="unclosed-ipv6-bracket"),
]

#: Same-origin spellings the check must still accept (it is not a refuse-everything check).
ACCEPTED = [
    pytest.param("http://127.0.0.1:{api}{path}", id="plain"),
    pytest.param("http://127.0.0.1:{api}{path}?page=1", id="with-query"),
]


def _config(servers: Servers) -> ClientConfig:
    return ClientConfig(api_key=KEY, base_url=servers.api_url, max_retries=0)


def _no_key(exc: BaseException) -> None:
    assert KEY not in f"{exc!s} {exc!r} {exc.args!r}"


@pytest.mark.parametrize("template", HOSTILE)
def test_sync_client_refuses(servers: Servers, template: str) -> None:
    url = servers.url(template)
    with SyncClient(_config(servers)) as client:
        with pytest.raises(ResultsHostError) as info:
            list(client.iter_result_bytes(MessageBatch.from_dict(_ended(url))))
        _no_key(info.value)
        with pytest.raises(ResultsHostError):
            list(client.iter_result_bytes(url))


@pytest.mark.parametrize("template", HOSTILE)
def test_async_client_refuses(servers: Servers, template: str) -> None:
    url = servers.url(template)

    async def attempt() -> None:
        async with AsyncClient(_config(servers)) as client:
            with pytest.raises(ResultsHostError) as info:
                async for _ in client.iter_result_bytes(MessageBatch.from_dict(_ended(url))):
                    pass
            _no_key(info.value)
            with pytest.raises(ResultsHostError):
                async for _ in client.iter_result_bytes(url):
                    pass

    asyncio.run(attempt())


@pytest.mark.parametrize("template", HOSTILE)
def test_the_send_itself_refuses_a_foreign_url(servers: Servers, template: str) -> None:
    """Every request carrying the key is checked where it is sent, not only results URLs."""
    url = servers.url(template)
    call = calls.Call("retrieve", "GET", url)
    with SyncClient(_config(servers)) as client, pytest.raises(ResultsHostError):
        client._send(call)

    async def attempt() -> None:
        async with AsyncClient(_config(servers)) as client:
            with pytest.raises(ResultsHostError):
                await client._send(call)

    asyncio.run(attempt())


@pytest.mark.parametrize("template", ACCEPTED)
def test_same_origin_results_urls_are_fetched(servers: Servers, template: str) -> None:
    url = servers.url(template)
    with SyncClient(_config(servers)) as client:
        assert b"".join(client.iter_result_bytes(url)) == LINE

    async def attempt() -> bytes:
        async with AsyncClient(_config(servers)) as client:
            return b"".join([chunk async for chunk in client.iter_result_bytes(url)])

    assert asyncio.run(attempt()) == LINE


def test_a_redirect_from_the_api_is_not_followed(servers: Servers) -> None:
    servers.forged[0] = servers.url("http://127.0.0.1:{evil}{path}")
    before = len(servers.api_seen)
    with SyncClient(_config(servers)) as client, pytest.raises(AnthropixAPIError) as info:
        list(client.iter_result_bytes("msgbatch_redirect"))
    assert info.value.status == 302

    async def attempt() -> None:
        async with AsyncClient(_config(servers)) as client:
            with pytest.raises(AnthropixAPIError):
                async for _ in client.iter_result_bytes("msgbatch_redirect"):
                    pass

    asyncio.run(attempt())
    assert servers.api_seen[before:] == ["/v1/messages/batches/msgbatch_redirect/results"] * 2


@pytest.mark.parametrize("template", HOSTILE)
def test_fetch_operator_refuses_a_forged_results_url(
    servers: Servers, template: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator

    servers.forged[0] = servers.url(template)
    conn = {"conn_type": "anthropix", "password": KEY, "host": servers.api_url, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", json.dumps(conn))
    out = tmp_path / "out"
    fetch = FetchBatchResultsOperator(task_id="f", batch_id="msgbatch_forged", destination=str(out))
    with pytest.raises(AirflowFailException) as info:
        fetch.execute({})  # type: ignore[arg-type]
    assert "refusing to send the API key" in str(info.value)
    _no_key(info.value)
    assert not [p for p in out.rglob("*") if p.is_file()], "a refused fetch wrote something"

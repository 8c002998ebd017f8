"""Reaching under ASGI to the TCP connection: faults no HTTP response can express, and guards.

A connection reset or a response that never comes cannot be produced by an ASGI app: if
the app returns without answering, uvicorn sends a 500. So the server runs with a small
subclass of uvicorn's HTTP protocol that records each connection's transport by the
client address found in the ASGI scope, and the app aborts that transport itself.

The same subclass guards what happens before a request reaches the app, where uvicorn
has no limit of its own: a client that sends its headers slowly (slow-loris) or endlessly
is cut after ``header_seconds`` or ``max_header_bytes``, and the parser's own 400 for
garbage is sent in the API's error envelope rather than as plain text.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.types import Receive, Scope

Registry = dict[tuple[str, int], asyncio.Transport]

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may do before its request reaches the app.

    :param header_seconds: the most time from a request's first byte (or the connection's
        opening) to the end of its headers.
    :param max_header_bytes: the most bytes a request line plus headers may take.
    """

    header_seconds: float = 10.0
    max_header_bytes: int = 64 * 1024


def raw_error(status: int, message: str, request_id: str) -> bytes:
    """A complete HTTP/1.1 error response in the API's envelope, closing the connection."""
    body = msgspec.json.encode(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message},
            "request_id": request_id,
        }
    )
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"request-id: %s\r\nconnection: close\r\n\r\n"
    ) % (status, _REASONS.get(status, b"Error"), len(body), request_id.encode("ascii"))
    return head + body


def protocol_class(
    registry: Registry,
    limits: ConnectionLimits | None = None,
    request_id: Callable[[], str] | None = None,
) -> type[asyncio.Protocol]:
    """Return uvicorn's fastest available HTTP protocol, subclassed to record transports in ``registry``.

    :param limits: header deadline and size (see :class:`ConnectionLimits`).
    :param request_id: makes the ``request-id`` of the errors the protocol answers itself.
    """
    bounds = limits or ConnectionLimits()
    new_id = request_id or (lambda: "req_emulator")
    base: type[Any]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:  # httptools missing: the pure-Python parser works too, only slower
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol

    class RecordingProtocol(base):  # type: ignore[misc,valid-type]
        # Between requests (or before the first), bytes received and a deadline run until
        # the parser has produced a request cycle: that is the header phase we bound.
        _anthropix_timer: asyncio.TimerHandle | None = None
        _anthropix_cycle: Any = None
        _anthropix_header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and len(peer) >= 2:
                self._anthropix_peer = (str(peer[0]), int(peer[1]))
                registry[self._anthropix_peer] = transport
            self._anthropix_arm()

        def connection_lost(self, exc: Exception | None) -> None:
            peer = getattr(self, "_anthropix_peer", None)
            if peer is not None:
                registry.pop(peer, None)
            self._anthropix_disarm()
            super().connection_lost(exc)

        def _anthropix_in_request(self) -> bool:
            cycle = self.cycle
            return cycle is not None and cycle is not self._anthropix_cycle

        def _anthropix_arm(self) -> None:
            """Start the header deadline for the next request on this connection."""
            self._anthropix_disarm()
            self._anthropix_cycle = self.cycle
            self._anthropix_header_bytes = 0
            self._anthropix_timer = self.loop.call_later(bounds.header_seconds, self._anthropix_deadline)

        def _anthropix_disarm(self) -> None:
            if self._anthropix_timer is not None:
                self._anthropix_timer.cancel()
                self._anthropix_timer = None

        def _anthropix_deadline(self) -> None:
            self._anthropix_timer = None
            if not self._anthropix_in_request() and not self.transport.is_closing():
                self._anthropix_refuse(
                    408, f"the request headers did not arrive within {bounds.header_seconds:g} s; connection closed"
                )

        def _anthropix_refuse(self, status: int, message: str) -> None:
            self.transport.write(raw_error(status, message, new_id()))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._anthropix_in_request():
                cycle = self.cycle
                if cycle.response_complete:
                    # The previous request is answered: these bytes start the next one.
                    self._anthropix_arm()
                else:
                    super().data_received(data)
                    return
            elif self._anthropix_timer is None:
                self._anthropix_arm()
            self._anthropix_header_bytes += len(data)
            super().data_received(data)
            if self._anthropix_in_request():
                self._anthropix_disarm()
            elif self._anthropix_header_bytes > bounds.max_header_bytes and not self.transport.is_closing():
                self._anthropix_refuse(
                    431, f"the request line and headers exceed {bounds.max_header_bytes:,} bytes; connection closed"
                )

        def send_400_response(self, msg: str) -> None:
            """The parser's refusal of garbage, in the API's envelope instead of plain text."""
            self._anthropix_refuse(400, f"malformed HTTP request: {msg}")

    return RecordingProtocol


def transport_of(scope: Scope, registry: Registry) -> asyncio.Transport | None:
    """The transport that carried this request, if the server recorded it."""
    client = scope.get("client")
    if not client:
        return None
    return registry.get((str(client[0]), int(client[1])))


async def abort_connection(scope: Scope, receive: Receive, registry: Registry, *, reset: bool) -> None:
    """Close the request's connection without an answer; with ``reset`` the peer sees ECONNRESET.

    Waits until the server has noticed the disconnect, so it does not try to answer on
    the closed connection itself.
    """
    transport = transport_of(scope, registry)
    if transport is None:
        raise RuntimeError("the emulator's connection registry is not installed (run it with run_emulator/serve)")
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    while (await receive())["type"] != "http.disconnect":
        pass

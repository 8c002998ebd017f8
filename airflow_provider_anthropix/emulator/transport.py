"""Reaching under ASGI to the TCP connection, for faults no HTTP response can express.

A connection reset or a response that never comes cannot be produced by an ASGI app: if
the app returns without answering, uvicorn sends a 500. So the server runs with a small
subclass of uvicorn's HTTP protocol that records each connection's transport by the
client address found in the ASGI scope, and the app aborts that transport itself.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

from starlette.types import Receive, Scope

Registry = dict[tuple[str, int], asyncio.Transport]


def protocol_class(registry: Registry) -> type[asyncio.Protocol]:
    """Return uvicorn's fastest available HTTP protocol, subclassed to record transports in ``registry``."""
    base: type[Any]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:  # httptools missing: the pure-Python parser works too, only slower
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol

    class RecordingProtocol(base):  # type: ignore[misc,valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and len(peer) >= 2:
                self._anthropix_peer = (str(peer[0]), int(peer[1]))
                registry[self._anthropix_peer] = transport

        def connection_lost(self, exc: Exception | None) -> None:
            peer = getattr(self, "_anthropix_peer", None)
            if peer is not None:
                registry.pop(peer, None)
            super().connection_lost(exc)

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

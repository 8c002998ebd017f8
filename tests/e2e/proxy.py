"""A loopback TCP proxy that can be switched off and on, to make the API "go away" for a while.

The emulator keeps its batches in memory, so restarting it would lose the batch a DAG is
waiting for. Putting this proxy between Airflow and the emulator gives the same view from
Airflow's side as a restart or an outage: while :meth:`Proxy.refuse` is in force the
listening socket is closed (new connections get ``ECONNREFUSED``) and every open
connection is aborted with a reset; :meth:`Proxy.accept` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Proxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_host:upstream_port`` from a background thread."""

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self.connections_accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="e2e-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """Base URL clients should use instead of the upstream's."""
        return f"http://127.0.0.1:{self.port}"

    def _call(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(factory(), self._loop).result(timeout)

    def start(self) -> Proxy:
        """Start the thread and listen (on a free port the first time)."""
        self._thread.start()
        self._call(self._listen)
        return self

    def refuse(self) -> None:
        """Stop listening and reset every open connection: the API is unreachable until :meth:`accept`."""
        self._call(self._close_all)

    def accept(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen)

    def stop(self) -> None:
        """Close everything and end the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close_all)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(512)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            transport = writer.transport
            if isinstance(transport, asyncio.Transport):
                # SO_LINGER 0 turns the close into a TCP reset, like a server process that died.
                raw = transport.get_extra_info("socket")
                if raw is not None:
                    with contextlib.suppress(OSError):
                        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self._open.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self._open.update((client_writer, up_writer))

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(1 << 16):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    if writer.can_write_eof():
                        writer.write_eof()

        try:
            await asyncio.gather(pump(client_reader, up_writer), pump(up_reader, client_writer))
        finally:
            for writer in (client_writer, up_writer):
                self._open.discard(writer)
                writer.close()

"""Serving the emulator: on a socket we bind ourselves, in the foreground or in a thread.

Binding the socket before uvicorn starts means the port is known at once (``port=0``
picks a free one) and nothing races for it. The server runs with the connection-recording
protocol of :mod:`.transport`, which the reset/drop/cut faults need.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from airflow_provider_anthropix.emulator.app import EmulatorApp
from airflow_provider_anthropix.emulator.config import EmulatorConfig
from airflow_provider_anthropix.emulator.faults import Fault
from airflow_provider_anthropix.emulator.transport import ConnectionLimits, protocol_class


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket; ``port=0`` lets the OS choose a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    """The base URL clients use to reach a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop when installed (several times faster per request), else the stdlib one."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def make_server(app: EmulatorApp, *, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for ``app`` with the fastest HTTP parser available and no access log.

    Its limits (header deadline and size, keep-alive) come from ``app.config``, so a few slow
    or flooding clients are cut instead of holding connections and memory forever.
    """
    settings = app.config
    limits = ConnectionLimits(header_seconds=settings.header_seconds, max_header_bytes=settings.max_header_bytes)
    config = uvicorn.Config(
        app,
        http=protocol_class(app.registry, limits, app.ids.request_id),
        timeout_keep_alive=max(1, round(settings.keep_alive_seconds)),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        server_header=False,
        date_header=False,
    )
    return uvicorn.Server(config)


async def serve_until_stopped(
    server: uvicorn.Server, sock: socket.socket, on_started: Callable[[], None] | None = None
) -> None:
    """Run ``server`` on ``sock``; call ``on_started`` once it accepts connections."""
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.002)
    if server.started and on_started is not None:
        on_started()
    await task


class EmulatorHandle:
    """What :func:`run_emulator` yields: the URL and direct control of the running emulator.

    Control goes straight to the in-process state (no HTTP), so it works with ``admin=False`` too.
    """

    def __init__(self, app: EmulatorApp, url: str) -> None:
        self.app = app
        #: base URL, e.g. ``http://127.0.0.1:40123`` (give it to a client as base_url)
        self.url = url

    @property
    def config(self) -> EmulatorConfig:
        """The live settings; changing e.g. ``processing_seconds`` affects batches created afterwards."""
        return self.app.config

    def stats(self) -> dict[str, Any]:
        """Calls per endpoint (``calls``), ``batches_created``, ``faults_fired``, armed ``faults``."""
        return self.app.stats()

    def add_fault(self, kind: str | Fault, **fields: Any) -> Fault:
        """Arm a fault, e.g. ``add_fault("status", endpoint="retrieve", status=529, count=2)``."""
        fault = kind if isinstance(kind, Fault) else Fault(kind=kind, **fields)
        self.app.faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        """Disarm every fault."""
        self.app.faults.clear()

    def advance(self, seconds: float) -> None:
        """Move the emulated clock forward (reach expiry or archiving without waiting)."""
        self.app.clock.advance(seconds)

    def reset(self) -> None:
        """Forget batches, statistics, faults and clock offset (cheap: use it between tests)."""
        self.app.reset()

    def attempts(self, custom_id: str) -> int:
        """How many batches of this emulator have carried ``custom_id`` so far."""
        return self.app.store.attempts(custom_id)

    def reset_attempts(self) -> None:
        """Forget attempt counts (``reset()`` does too): the next batch of each custom_id is attempt 1."""
        self.app.store.reset_attempts()

    def call_times(self, endpoint: str) -> list[float]:
        """When the latest calls of ``endpoint`` arrived (``time.monotonic()``, oldest first).

        Tests of client pacing compare these: e.g. a retry that honours ``retry-after: 2``
        arrives at least 2 s after the call that was refused.
        """
        return self.app.store.call_times(endpoint)

    def alter_results(self, batch_id: str, *, reshuffle: bool = False, duplicate_line: int | None = None) -> str:
        """Serve other bytes for an ended batch's results from now on (new etag); returns the etag.

        ``reshuffle`` reorders the lines (a resume must notice, by the etag, and start over);
        ``duplicate_line`` serves that 0-based line twice (a consumer must cope with it).
        The batch must have ended; its results are rendered first if need be.
        """
        self.app.store.results(batch_id).result(timeout=60)
        return self.app.store.alter_results(batch_id, reshuffle=reshuffle, duplicate_line=duplicate_line)


class _ServerThread(threading.Thread):
    def __init__(self, server: uvicorn.Server, sock: socket.socket) -> None:
        super().__init__(name="anthropix-emulator", daemon=True)
        self.server = server
        self.sock = sock
        self.error: BaseException | None = None

    def run(self) -> None:
        loop = new_loop()
        try:
            loop.run_until_complete(serve_until_stopped(self.server, self.sock))
        except BaseException as exc:  # reported to the thread that waits for the start
            self.error = exc
        finally:
            loop.close()


@contextlib.contextmanager
def run_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    processing_seconds: float = 2.0,
    seed: int = 0,
    error_rate: float = 0.0,
    expire_rate: float = 0.0,
    admin: bool = True,
    start_timeout: float = 10.0,
    **options: Any,
) -> Iterator[EmulatorHandle]:
    """Run an emulator in a background thread for the ``with`` block; yields an :class:`EmulatorHandle`.

    :param host: interface to listen on (loopback by default).
    :param port: TCP port; 0 picks a free one (read it from ``handle.url``).
    :param api_key: the only key accepted; None accepts any key.
    :param processing_seconds: how long each batch takes to end.
    :param seed: makes outcomes, result order and ids repeatable.
    :param error_rate: share of requests that come back ``errored`` (first attempts only by default).
    :param expire_rate: share of requests that come back ``expired`` (first attempts only by default).
    :param admin: also serve the ``/_emulator/*`` HTTP admin endpoints.
    :param options: any other :class:`EmulatorConfig` field (``cancel_seconds``, ``expiry_seconds``,
        ``result_bytes``, ``max_requests``, ``max_body_bytes``, ``faults``, ...).
    """
    config = EmulatorConfig(
        api_key=api_key,
        processing_seconds=processing_seconds,
        seed=seed,
        error_rate=error_rate,
        expire_rate=expire_rate,
        admin=admin,
        **options,
    )
    app = EmulatorApp(config)
    sock = bind_socket(host, port)
    server = make_server(app)
    thread = _ServerThread(server, sock)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the emulator did not start: {thread.error!r}")
        time.sleep(0.002)
    try:
        yield EmulatorHandle(app, url_of(sock))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.store.close()
        sock.close()

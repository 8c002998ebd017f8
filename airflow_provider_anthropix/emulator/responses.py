"""Responses the emulator sends: JSON, the error envelope, results streams, aborted connections."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from airflow_provider_anthropix.emulator.transport import Registry, abort_connection

_encode = msgspec.json.Encoder().encode


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with msgspec (a retrieve is mostly this call)."""
    return Response(_encode(payload), status_code=status, headers=headers, media_type="application/json")


def error_response(
    status: int, error_type: str, message: str, request_id: str, headers: dict[str, str] | None = None
) -> Response:
    """The API's error envelope, with the request id in the body as well as the header."""
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    return json_response(body, status, headers)


class BytesStreamResponse(Response):
    """Streams a slice of an in-memory buffer in chunks, optionally cut short by an abort.

    The buffer is rendered once and never changes, so slices are memoryviews: no copy per
    request however many clients download the same results.
    """

    def __init__(
        self,
        data: bytes | bytearray,
        *,
        start: int,
        end: int,
        status_code: int,
        headers: dict[str, str],
        chunk_bytes: int,
        cut_after: int | None = None,
        registry: Registry | None = None,
    ) -> None:
        headers = {**headers, "content-length": str(end - start)}
        super().__init__(None, status_code=status_code, headers=headers, media_type="application/binary")
        self._view = memoryview(data)[start:end]
        self._chunk = chunk_bytes
        self._cut_after = cut_after
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        view = self._view
        stop = len(view) if self._cut_after is None else min(len(view), self._cut_after)
        chunk = self._chunk
        for pos in range(0, stop, chunk):
            await send({"type": "http.response.body", "body": view[pos : min(pos + chunk, stop)], "more_body": True})
        if stop < len(view) and self._registry is not None:
            await abort_connection(scope, receive, self._registry, reset=True)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class AbortResponse(Response):
    """No response at all: the connection is closed (``reset``: with RST) instead."""

    def __init__(self, registry: Registry, *, reset: bool) -> None:
        super().__init__(None)
        self._registry = registry
        self._reset = reset

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await abort_connection(scope, receive, self._registry, reset=self._reset)

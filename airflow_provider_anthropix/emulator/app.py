"""The HTTP face of the emulator: routes, headers, faults, and errors in the API's envelope.

Every API call goes through :meth:`EmulatorApp._api`, in this order, like the real edge:
count the call, apply armed faults, check the key and ``anthropic-version``, run the
handler, map refusals to the error envelope, and stamp ``request-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airflow_provider_anthropix.api.errors import error_type_for
from airflow_provider_anthropix.api.limits import API_VERSIONS, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, MIN_LIST_LIMIT
from airflow_provider_anthropix.api.validation import BatchChecker, check_api_version
from airflow_provider_anthropix.emulator.clock import Clock, rfc3339
from airflow_provider_anthropix.emulator.config import EmulatorConfig
from airflow_provider_anthropix.emulator.faults import Fault, FaultBook
from airflow_provider_anthropix.emulator.ids import IdMaker
from airflow_provider_anthropix.emulator.outcomes import Entry, decide
from airflow_provider_anthropix.emulator.responses import (
    AbortResponse,
    BytesStreamResponse,
    error_response,
    json_response,
)
from airflow_provider_anthropix.emulator.state import BatchStore, EmulatorError
from airflow_provider_anthropix.emulator.transport import Registry

Handler = Callable[[Request, str, Fault | None], Awaitable[Response]]

#: Bodies above this size are decoded and checked in a worker thread, so pollers are not starved.
_OFFLOAD_BYTES = 1 << 20
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_decode = msgspec.json.decode


def _base_url(request: Request) -> str:
    """Return the server's URL as the client reached it (results_url must point back here)."""
    host = request.headers.get("host")
    if not host:
        server = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{request.url.scheme}://{host}"


def _key_of(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


class EmulatorApp:
    """An ASGI app serving the Message Batches API from an in-memory :class:`BatchStore`."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.clock = Clock()
        self.ids = IdMaker()
        self.store = BatchStore(self.config, self.clock, self.ids)
        self.faults = FaultBook(self.config.faults)
        #: transports by client address, filled by the server's protocol (see transport.py)
        self.registry: Registry = {}
        routes = [
            Route("/v1/messages/batches", self._api("create", self._create), methods=["POST"]),
            Route("/v1/messages/batches", self._api("list", self._list), methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self._api("retrieve", self._retrieve), methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self._api("delete", self._delete), methods=["DELETE"]),
            Route("/v1/messages/batches/{batch_id}/cancel", self._api("cancel", self._cancel), methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}/results", self._api("results", self._results), methods=["GET"]),
        ]
        if self.config.admin:
            routes += [
                Route("/_emulator/faults", self._admin(self._admin_faults), methods=["GET", "POST", "DELETE"]),
                Route("/_emulator/stats", self._admin(self._admin_stats), methods=["GET"]),
                Route("/_emulator/reset", self._admin(self._admin_reset), methods=["POST"]),
                Route("/_emulator/clock", self._admin(self._admin_clock), methods=["POST"]),
            ]
        self.starlette = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={HTTPException: self._http_exception},
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI entry point."""
        await self.starlette(scope, receive, send)

    # -- plumbing ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        # Render results as soon as batches end, so the first download does not wait for it.
        async def render_when_due() -> None:
            while True:
                self.store.render_due()
                await asyncio.sleep(0.05)

        task = asyncio.create_task(render_when_due())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = f"{request.method} {request.url.path} is not an endpoint of this API"
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        request_id = self.ids.request_id()
        response = error_response(exc.status_code, error_type_for(exc.status_code), message, request_id)
        response.headers["request-id"] = request_id
        return response

    def _check_headers(self, request: Request) -> str:
        """Authenticate and return the API version, or raise the API's 401/400."""
        key = _key_of(request)
        if key is None:
            raise EmulatorError(
                401, "authentication_error", "missing API key: send it as x-api-key or Authorization: Bearer"
            )
        expected = self.config.api_key
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            raise EmulatorError(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            raise EmulatorError(
                400,
                "invalid_request_error",
                f"anthropic-version header is required; use one of {', '.join(API_VERSIONS)}",
            )
        problem = check_api_version(version)
        if problem is not None:
            raise EmulatorError(400, "invalid_request_error", problem)
        return version

    def _fault_response(self, fault: Fault, request_id: str) -> Response:
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            value = fault.retry_after
            headers["retry-after"] = str(int(value)) if float(value).is_integer() else str(value)
        if fault.should_retry is not None:
            headers["x-should-retry"] = "true" if fault.should_retry else "false"
        message = fault.message or f"emulated fault: HTTP {fault.status}"
        return error_response(fault.status, error_type_for(fault.status), message, request_id, headers)

    def _api(self, name: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            request_id = self.ids.request_id()
            self.store.record_call(name)
            latency, fault = self.faults.take(name)
            if fault is not None and fault.kind == "status":
                response = self._fault_response(fault, request_id)
            elif fault is not None and fault.kind == "reset":
                await _delay(latency)
                return AbortResponse(self.registry, reset=True)
            else:
                try:
                    version = self._check_headers(request)
                    response = await handler(request, version, fault)
                except EmulatorError as exc:
                    response = error_response(exc.status, exc.error_type, exc.message, request_id, exc.headers)
                if fault is not None and fault.kind == "drop":
                    await _delay(latency)
                    return AbortResponse(self.registry, reset=False)
            # Latency delays the answer, not the work: a slow create still creates its batch,
            # which is exactly the case a client that timed out must not resend.
            await _delay(latency)
            response.headers["request-id"] = request_id
            return response

        return endpoint

    # -- API endpoints -----------------------------------------------------------------------
    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        too_large = EmulatorError(413, "request_too_large", f"request body is larger than the limit of {limit:,} bytes")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        return bytes(body)

    def _entries(self, body: bytes, version: str) -> list[Entry]:
        """Decode and check a create body; the entries of a valid one, else the API's 400."""
        try:
            payload = _decode(body)
        except msgspec.DecodeError as exc:
            raise EmulatorError(400, "invalid_request_error", f"request body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
            raise EmulatorError(400, "invalid_request_error", "requests: a list of {custom_id, params} is required")
        extra = sorted(set(payload) - {"requests"})
        if extra:
            raise EmulatorError(400, "invalid_request_error", f"{extra[0]}: Extra inputs are not permitted")
        requests = payload["requests"]
        limit = self.config.max_requests
        if not 1 <= len(requests) <= limit:
            raise EmulatorError(
                400,
                "invalid_request_error",
                f"requests: a batch holds 1 to {limit:,} requests; got {len(requests):,}",
            )
        checker = BatchChecker(api_version=version, max_requests=limit)
        for request in requests:
            checker.check(request)
        if checker.problems:
            first, more = checker.problems[0], len(checker.problems) - 1
            suffix = f" (and {more} more problem{'s' if more != 1 else ''})" if more else ""
            raise EmulatorError(400, "invalid_request_error", f"{first}{suffix}")
        seed, rate = self.config.seed, self.config.error_rate
        return [decide(request, seed=seed, error_rate=rate) for request in requests]

    async def _create(self, request: Request, version: str, _fault: Fault | None) -> Response:
        body = await self._read_body(request)
        if len(body) > _OFFLOAD_BYTES:
            entries = await asyncio.get_running_loop().run_in_executor(None, self._entries, body, version)
        else:
            entries = self._entries(body, version)
        batch = self.store.create(entries)
        return json_response(batch.to_dict(self.clock.now(), _base_url(request), fresh=True))

    async def _retrieve(self, request: Request, _version: str, _fault: Fault | None) -> Response:
        batch = self.store.get(request.path_params["batch_id"])
        return json_response(batch.to_dict(self.clock.now(), _base_url(request)))

    async def _list(self, request: Request, _version: str, _fault: Fault | None) -> Response:
        query = request.query_params
        raw_limit = query.get("limit", str(DEFAULT_LIST_LIMIT))
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not MIN_LIST_LIMIT <= limit <= MAX_LIST_LIMIT:
            raise EmulatorError(
                400,
                "invalid_request_error",
                f"limit must be an integer from {MIN_LIST_LIMIT} to {MAX_LIST_LIMIT}; got {raw_limit!r}",
            )
        before_id, after_id = query.get("before_id") or None, query.get("after_id") or None
        if before_id and after_id:
            raise EmulatorError(400, "invalid_request_error", "give before_id or after_id, not both")
        batches, has_more = self.store.page(limit, before_id, after_id)
        now, base = self.clock.now(), _base_url(request)
        data = [b.to_dict(now, base) for b in batches]
        return json_response(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def _cancel(self, request: Request, _version: str, _fault: Fault | None) -> Response:
        batch = self.store.cancel(request.path_params["batch_id"])
        return json_response(batch.to_dict(self.clock.now(), _base_url(request)))

    async def _delete(self, request: Request, _version: str, _fault: Fault | None) -> Response:
        batch_id = request.path_params["batch_id"]
        self.store.delete(batch_id)
        return json_response({"id": batch_id, "type": "message_batch_deleted"})

    async def _results(self, request: Request, _version: str, fault: Fault | None) -> Response:
        batch_id = request.path_params["batch_id"]
        data = await asyncio.wrap_future(self.store.results(batch_id))
        size = len(data)
        headers = {"accept-ranges": "bytes", "etag": f'"{batch_id}-{size}"'}
        start, end, status = 0, size, 200
        wanted = request.headers.get("range")
        if wanted:
            match = _RANGE_RE.match(wanted.strip())
            first, last = (match.group(1), match.group(2)) if match else ("", "")
            if first:
                start = int(first)
                end = min(size, int(last) + 1) if last else size
            elif last:  # suffix range: the last N bytes
                start = max(0, size - int(last))
            if not match or (not first and not last) or start >= size or start >= end:
                raise EmulatorError(
                    416,
                    "invalid_request_error",
                    f"range {wanted!r} is not satisfiable for {size} bytes",
                    {"content-range": f"bytes */{size}"},
                )
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        return BytesStreamResponse(
            data,
            start=start,
            end=end,
            status_code=status,
            headers=headers,
            chunk_bytes=self.config.chunk_bytes,
            cut_after=fault.after_bytes if fault is not None and fault.kind == "cut" else None,
            registry=self.registry,
        )

    # -- admin endpoints ---------------------------------------------------------------------
    def _admin(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """Admin calls are not API calls: no faults, no key, not counted; but they get a request-id too."""

        async def endpoint(request: Request) -> Response:
            response = await handler(request)
            if "request-id" not in response.headers:
                response.headers["request-id"] = self.ids.request_id()
            return response

        return endpoint

    def _admin_error(self, message: str) -> Response:
        request_id = self.ids.request_id()
        return error_response(400, "invalid_request_error", message, request_id, {"request-id": request_id})

    async def _admin_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
        elif request.method == "POST":
            try:
                payload = _decode(await request.body())
                items = payload.get("faults") if isinstance(payload, dict) and "faults" in payload else payload
                items = items if isinstance(items, list) else [items]
                faults = [Fault.from_dict(item) for item in items]
            except (msgspec.DecodeError, AttributeError, TypeError, ValueError) as exc:
                return self._admin_error(f"bad fault: {exc}")
            for fault in faults:
                self.faults.add(fault)
        return json_response({"faults": self.faults.pending()})

    def stats(self) -> dict[str, Any]:
        """Calls per endpoint, batches created, faults fired and still armed."""
        return {**self.store.stats(), "faults_fired": self.faults.fired, "faults": self.faults.pending()}

    def reset(self) -> None:
        """Back to a fresh emulator: no batches, statistics, faults or clock offset."""
        self.store.reset()
        self.faults.clear()
        self.faults.fired = 0
        self.clock.reset()

    async def _admin_stats(self, _request: Request) -> Response:
        return json_response(self.stats())

    async def _admin_reset(self, _request: Request) -> Response:
        self.reset()
        return json_response({"reset": True})

    async def _admin_clock(self, request: Request) -> Response:
        try:
            payload = _decode(await request.body() or b"{}")
            self.clock.advance(float(payload.get("advance", 0)))
        except (msgspec.DecodeError, AttributeError, TypeError, ValueError) as exc:
            return self._admin_error(f'bad clock change (expected {{"advance": seconds}}): {exc}')
        return json_response({"now": rfc3339(self.clock.now())})


async def _delay(seconds: float) -> None:
    if seconds:
        await asyncio.sleep(seconds)


def create_app(config: EmulatorConfig | None = None) -> EmulatorApp:
    """Build an emulator ASGI app (serve it with :func:`~.server.serve` to get connection faults)."""
    return EmulatorApp(config)

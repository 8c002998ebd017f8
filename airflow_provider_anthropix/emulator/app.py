"""The HTTP face of the emulator: routes, headers, faults, and errors in the API's envelope.

Every API call goes through :meth:`EmulatorApp._api`, in this order: check the key and
``anthropic-version`` (a refused call is neither counted nor given a fault: a client
without the key cannot use up a fault a test armed), count the call, apply armed faults,
run the handler, map refusals to the error envelope, and stamp ``request-id``. Anything
else a handler raises is answered as a 500 in the same envelope, never as plain text.

Input is untrusted: bodies are read against a size limit, a deadline and a server-wide
budget of bytes in flight, and JSON that is not UTF-8 or nests too deeply is a 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airflow_provider_anthropix.api.errors import error_type_for
from airflow_provider_anthropix.api.limits import API_VERSIONS, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, MIN_LIST_LIMIT
from airflow_provider_anthropix.api.validation import BatchChecker, check_api_version, validate_request
from airflow_provider_anthropix.emulator.clock import Clock, rfc3339
from airflow_provider_anthropix.emulator.config import EmulatorConfig
from airflow_provider_anthropix.emulator.faults import Fault, FaultBook
from airflow_provider_anthropix.emulator.ids import IdMaker
from airflow_provider_anthropix.emulator.intake import (
    MESSAGE_OVERHEAD_TOKENS,
    Params,
    fast_requests,
    params_of,
    plain_prompt,
    prompt_usage,
    summarize,
)
from airflow_provider_anthropix.emulator.models import page as model_page
from airflow_provider_anthropix.emulator.models import resolve as resolve_model
from airflow_provider_anthropix.emulator.outcomes import ERRORED, Dice, Entry, make_entry, plain_entry
from airflow_provider_anthropix.emulator.responses import (
    AbortResponse,
    BytesStreamResponse,
    error_response,
    json_response,
)
from airflow_provider_anthropix.emulator.state import BatchStore, EmulatorError
from airflow_provider_anthropix.emulator.structured import plan_answer
from airflow_provider_anthropix.emulator.transport import Registry

Handler = Callable[[Request, str, Fault | None], Awaitable[Response]]

#: Bodies above this size are decoded and checked in a worker thread, so pollers are not starved.
_OFFLOAD_BYTES = 1 << 20
#: Admin bodies are tiny; anything bigger is refused.
_ADMIN_BODY_BYTES = 1 << 20
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Byte positions longer than this are not offsets any body can have (and int() of 5,000 digits raises).
_MAX_POSITION_DIGITS = 18
_decode = msgspec.json.decode
_log = logging.getLogger(__name__)


def decode_json(body: bytes | bytearray, what: str = "request body") -> Any:
    """Decode untrusted JSON, or raise the API's 400 naming what is wrong with it.

    msgspec raises three different things for bad input: ``DecodeError`` (syntax),
    ``UnicodeDecodeError`` (a string that is not UTF-8) and ``RecursionError`` (arrays or
    objects nested deeper than the interpreter's limit); all three are the client's fault.
    """
    try:
        return _decode(body)
    except msgspec.DecodeError as exc:
        message = f"{what} is not valid JSON: {exc}"
    except UnicodeDecodeError as exc:
        message = f"{what} is not valid UTF-8: a string holds bytes that are not UTF-8 ({exc.reason})"
    except RecursionError:
        message = f"{what} nests JSON arrays or objects too deeply"
    raise EmulatorError(400, "invalid_request_error", message)


def _short(text: str, limit: int = 60) -> str:
    """``repr`` of client input, cut so a 100 KB value is not echoed back whole."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


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
        #: bytes of request bodies being received or decoded now, over all clients
        self._inflight_bytes = 0
        routes = [
            Route("/v1/messages/batches", self._api("create", self._create), methods=["POST"]),
            Route("/v1/messages/batches", self._api("list", self._list), methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self._api("retrieve", self._retrieve), methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self._api("delete", self._delete), methods=["DELETE"]),
            Route("/v1/messages/batches/{batch_id}/cancel", self._api("cancel", self._cancel), methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}/results", self._api("results", self._results), methods=["GET"]),
            Route("/v1/messages/count_tokens", self._api("count_tokens", self._count_tokens), methods=["POST"]),
            Route("/v1/models", self._api("models", self._models), methods=["GET"]),
            Route("/v1/models/{model_id:path}", self._api("models", self._model), methods=["GET"]),
        ]
        if self.config.admin:
            routes += [
                Route("/_emulator/faults", self._admin(self._admin_faults), methods=["GET", "POST", "DELETE"]),
                Route("/_emulator/stats", self._admin(self._admin_stats), methods=["GET"]),
                Route("/_emulator/reset", self._admin(self._admin_reset), methods=["POST"]),
                Route("/_emulator/clock", self._admin(self._admin_clock), methods=["POST"]),
                Route("/_emulator/attempts", self._admin(self._admin_attempts), methods=["GET", "DELETE"]),
                Route("/_emulator/batches/{batch_id}/results", self._admin(self._admin_results), methods=["POST"]),
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

    def _check_key(self, request: Request) -> None:
        """The API's key check (x-api-key or Authorization: Bearer): raise its 401 unless the key is right."""
        key = _key_of(request)
        if key is None:
            raise EmulatorError(
                401, "authentication_error", "missing API key: send it as x-api-key or Authorization: Bearer"
            )
        expected = self.config.api_key
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            raise EmulatorError(401, "authentication_error", "invalid x-api-key")

    def _check_headers(self, request: Request) -> str:
        """Authenticate and return the API version, or raise the API's 401/400."""
        self._check_key(request)
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
            try:
                version = self._check_headers(request)
            except EmulatorError as exc:
                self.store.record_rejected(name)
                response = error_response(exc.status, exc.error_type, exc.message, request_id, exc.headers)
                response.headers["request-id"] = request_id
                return response
            self.store.record_call(name)
            latency, fault = self.faults.take(name)
            if fault is not None and fault.kind == "status":
                response = self._fault_response(fault, request_id)
            elif fault is not None and fault.kind == "reset":
                await _delay(latency)
                return AbortResponse(self.registry, reset=True)
            else:
                try:
                    response = await handler(request, version, fault)
                except EmulatorError as exc:
                    response = error_response(exc.status, exc.error_type, exc.message, request_id, exc.headers)
                except Exception:  # a bug or input we did not foresee: still the API's envelope, never text
                    _log.exception("emulator: %s failed", name)
                    response = error_response(500, "api_error", "internal error in the emulator", request_id)
                if fault is not None and fault.kind == "drop":
                    await _delay(latency)
                    return AbortResponse(self.registry, reset=False)
                if fault is not None and fault.kind == "garble" and 200 <= response.status_code < 300:
                    response = _garbled(response)
            # Latency delays the answer, not the work: a slow create still creates its batch,
            # which is exactly the case a client that timed out must not resend.
            await _delay(latency)
            response.headers["request-id"] = request_id
            return response

        return endpoint

    # -- API endpoints -----------------------------------------------------------------------
    async def _read_body(self, request: Request, limit: int, budget: _BudgetToken | None = None) -> bytearray:
        """The whole body, within ``limit`` bytes and ``body_seconds``, else the API's 413/408.

        Give it the ``budget`` of :meth:`_body_budget`: the bytes are counted against the budget of
        bodies in flight as they arrive (a body without content-length is counted as it grows).
        """
        too_large = EmulatorError(
            413,
            "request_too_large",
            f"request body is larger than the limit of {limit:,} bytes",
            {"connection": "close"},
        )
        declared = _content_length(request)
        if declared is not None and declared > limit:
            raise too_large
        body = bytearray()
        receive = request.receive
        try:
            # One deadline for the whole body (not one timer per chunk: a 256 MB body has thousands).
            async with asyncio.timeout(self.config.body_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise EmulatorError(
                            400, "invalid_request_error", "the client disconnected before sending the body"
                        )
                    chunk = message.get("body", b"")
                    if chunk:
                        body += chunk
                        if len(body) > limit:
                            raise too_large
                        if budget is not None:
                            self._grow_budget(budget, len(body))
                    if not message.get("more_body", False):
                        return body  # not copied to bytes: 256 MB would be copied once more for nothing
        except TimeoutError:
            raise EmulatorError(
                408,
                "invalid_request_error",
                f"the request body did not arrive within {self.config.body_seconds:g} s ({len(body):,} bytes received)",
                {"connection": "close"},
            ) from None

    @contextlib.contextmanager
    def _body_budget(self, request: Request) -> Iterator[_BudgetToken]:
        """Reserve the request's declared body bytes in the server-wide budget, or raise a 503.

        The reservation lasts until the handler is done, decoding included: that is when the
        memory a body costs is given back.
        """
        declared = _content_length(request) or 0
        cap = self.config.max_inflight_body_bytes
        if declared <= self.config.max_body_bytes and self._inflight_bytes + declared > cap:
            raise self._busy(declared)
        token = _BudgetToken(declared)
        self._inflight_bytes += declared
        try:
            yield token
        finally:
            self._inflight_bytes -= token.reserved

    def _grow_budget(self, token: _BudgetToken, received: int) -> None:
        """Count bytes beyond the declared length (chunked bodies) against the budget as they arrive."""
        if received <= token.reserved:
            return
        extra = received - token.reserved
        if self._inflight_bytes + extra > self.config.max_inflight_body_bytes:
            raise self._busy(received)
        token.reserved += extra
        self._inflight_bytes += extra

    def _busy(self, size: int) -> EmulatorError:
        return EmulatorError(
            503,
            "api_error",
            f"the emulator is receiving {self._inflight_bytes:,} bytes of request bodies already; "
            f"{size:,} more would exceed its budget of {self.config.max_inflight_body_bytes:,} bytes; retry later",
            {"retry-after": "1", "connection": "close"},
        )

    def _entries(self, body: bytes | bytearray, version: str) -> list[Entry]:
        """Decode and check a create body; the entries of a valid one, else the API's 400.

        Valid bodies take the typed fast path (:mod:`.intake`); anything it does not accept
        goes through the generic decode and the shared validator, which word every 400.
        """
        config = self.config
        dice = Dice(config.seed, config.error_rate, config.expire_rate, config.rates_every_attempt)
        with _gc_paused():
            return self._fast_entries(body, version, dice) or self._checked_entries(body, version, dice)

    def _fast_entries(self, body: bytes | bytearray, version: str, dice: Dice) -> list[Entry] | None:
        """The entries of a body the typed path accepts, else None (nothing claimed then)."""
        fast = fast_requests(body, api_version=version, max_requests=self.config.max_requests)
        if fast is None:
            return None
        return self._build([(request.custom_id, request.params) for request in fast], dice)

    def _build(self, requests: list[tuple[str, Params]], dice: Dice) -> list[Entry]:
        """Entries of a valid batch: attempts claimed, outcomes drawn, tokens and cache use counted.

        The prompt cache is per batch and in submission order: the first request with a
        given cacheable prefix writes it, later ones read it.
        """
        attempts = self.store.claim_attempts([custom_id for custom_id, _ in requests])
        strict_models = self.config.unknown_models == "errored"
        rolls = bool(dice.error_rate or dice.expire_rate)
        cached: set[bytes] = set()
        entries = []
        for (custom_id, params), attempt in zip(requests, attempts, strict=True):
            prompt = None if rolls else plain_prompt(params)
            if prompt is not None:  # most requests of a big create: what summarize and make_entry would give
                tokens = max(1, len(prompt) // 4) + MESSAGE_OVERHEAD_TOKENS  # as summarize counts one turn
                entry = plain_entry(custom_id, params.model, params.max_tokens, prompt, tokens)
                if strict_models and resolve_model(params.model) is None:
                    entry.outcome, entry.error_type = ERRORED, "invalid_request_error"
                    entry.error_message = f"model: {params.model!r} is not a model this API serves (see GET /v1/models)"
                entries.append(entry)
                continue
            joined, prompt, usage = summarize(params)
            write = read = 0
            if usage.prefix_key is not None:
                if usage.prefix_key in cached:
                    read = usage.prefix
                else:
                    write = usage.prefix
                    cached.add(usage.prefix_key)
            entry = make_entry(
                custom_id,
                params.model,
                params.max_tokens,
                joined,
                prompt,
                attempt=attempt,
                dice=dice,
                input_tokens=usage.total - write - read,
                cache_creation_input_tokens=write,
                cache_read_input_tokens=read,
                structured=plan_answer(
                    params.output_config, params.thinking, joined, seed=dice.seed, custom_id=custom_id, attempt=attempt
                ),
            )
            if strict_models and resolve_model(params.model) is None:
                entry.outcome, entry.error_type = ERRORED, "invalid_request_error"
                entry.error_message = f"model: {params.model!r} is not a model this API serves (see GET /v1/models)"
            entries.append(entry)
        return entries

    def _checked_entries(self, body: bytes | bytearray, version: str, dice: Dice) -> list[Entry]:
        """The generic path: dicts and the shared validator; raises its 400 for a bad body."""
        payload = decode_json(body)
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
        return self._build([(request["custom_id"], params_of(request["params"])) for request in requests], dice)

    async def _create(self, request: Request, version: str, _fault: Fault | None) -> Response:
        # The budget is held while the body is decoded too: that is when it costs most memory.
        with self._body_budget(request) as budget:
            body = await self._read_body(request, self.config.max_body_bytes, budget)
            if len(body) > _OFFLOAD_BYTES:
                entries = await asyncio.get_running_loop().run_in_executor(None, self._entries, body, version)
            else:
                entries = self._entries(body, version)
            del body
            batch = self.store.create(entries)
        return json_response(batch.to_dict(self.clock.now(), _base_url(request), fresh=True))

    async def _retrieve(self, request: Request, _version: str, _fault: Fault | None) -> Response:
        batch = self.store.get(request.path_params["batch_id"])
        return json_response(batch.to_dict(self.clock.now(), _base_url(request)))

    async def _list(self, request: Request, _version: str, _fault: Fault | None) -> Response:
        limit, before_id, after_id = _page_query(request)
        batches, has_more = self.store.page(limit, before_id, after_id)
        now, base = self.clock.now(), _base_url(request)
        return _page_response([b.to_dict(now, base) for b in batches], has_more)

    async def _models(self, request: Request, _version: str, _fault: Fault | None) -> Response:
        limit, before_id, after_id = _page_query(request)
        cursor = before_id or after_id
        if cursor is not None:
            listed = resolve_model(cursor)
            if listed is None or listed.id != cursor:
                raise EmulatorError(400, "invalid_request_error", f"{_short(cursor)} is not the id of a listed model")
        models, has_more = model_page(limit, before_id, after_id)
        return _page_response([m.to_dict() for m in models], has_more)

    async def _model(self, request: Request, _version: str, _fault: Fault | None) -> Response:
        name = request.path_params["model_id"]
        model = resolve_model(name)
        if model is None:
            raise EmulatorError(404, "not_found_error", f"model: {_short(name)}")
        return json_response(model.to_dict())

    async def _count_tokens(self, request: Request, version: str, _fault: Fault | None) -> Response:
        """``{"input_tokens": N}`` for a Messages body, the same N the request's result would report.

        N is ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens`` of a
        result for the same params (one function, :func:`.intake.prompt_usage`, counts both).
        """
        with self._body_budget(request) as budget:
            payload = decode_json(await self._read_body(request, self.config.max_body_bytes, budget))
        if not isinstance(payload, dict):
            raise EmulatorError(400, "invalid_request_error", "the body must be a Messages body (a JSON object)")
        refused = sorted(set(payload) & _NOT_COUNTED)
        if refused:
            raise EmulatorError(
                400,
                "invalid_request_error",
                f"{refused[0]}: Extra inputs are not permitted (count_tokens takes a Messages body "
                "without max_tokens and generation settings)",
            )
        # A count has no max_tokens; one above any thinking budget lets the shared checks run on the rest.
        params = {**payload, "max_tokens": 1 << 62}
        problems = [
            p.removeprefix("params.")
            for p in validate_request({"custom_id": "count", "params": params}, api_version=version)
        ]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise EmulatorError(400, "invalid_request_error", problems[0] + more)
        if self.config.unknown_models == "errored" and resolve_model(payload["model"]) is None:
            raise EmulatorError(404, "not_found_error", f"model: {_short(payload['model'])}")
        return json_response({"input_tokens": prompt_usage(params_of(params)).total})

    async def _cancel(self, request: Request, _version: str, _fault: Fault | None) -> Response:
        batch = self.store.cancel(request.path_params["batch_id"])
        return json_response(batch.to_dict(self.clock.now(), _base_url(request)))

    async def _delete(self, request: Request, _version: str, _fault: Fault | None) -> Response:
        batch_id = request.path_params["batch_id"]
        self.store.delete(batch_id)
        return json_response({"id": batch_id, "type": "message_batch_deleted"})

    async def _results(self, request: Request, _version: str, fault: Fault | None) -> Response:
        batch_id = request.path_params["batch_id"]
        await asyncio.wrap_future(self.store.results(batch_id))
        data, etag = self.store.served(batch_id)
        size = len(data)
        headers = {"accept-ranges": "bytes", "etag": etag}
        start, end, status = 0, size, 200
        wanted = request.headers.get("range")
        # If-Range: the range only applies to the bytes the client saw before (same etag);
        # results that have changed since are sent whole, with their new etag.
        if_range = request.headers.get("if-range")
        if wanted and (if_range is None or if_range.strip() == etag):
            start, end = _parse_range(wanted, size)
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
    def _check_admin(self, request: Request) -> None:
        """Refuse an admin call a web page could have made: the key, a same-origin caller and a JSON body.

        The emulator listens on loopback, which any page in the user's browser can reach; a
        form or ``fetch`` with a "simple" body (text/plain, a form) and no custom headers needs
        no CORS preflight, so without these checks a page could reset the emulator or move its
        clock. A browser cannot add ``x-api-key`` or ``Authorization`` nor send
        ``application/json`` across sites without a preflight, which the emulator never grants.
        """
        self._check_key(request)
        origin = request.headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() != _base_url(request).lower():
            raise EmulatorError(
                403, "permission_error", f"admin calls from another origin ({_short(origin)}) are refused"
            )
        if request.method == "POST":
            media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media_type != "application/json":
                got = _short(media_type) if media_type else "none"
                raise EmulatorError(
                    415,
                    "invalid_request_error",
                    f"admin calls take a JSON body: send content-type: application/json, not {got}",
                )

    def _admin(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """Admin calls are not API calls: no faults, not counted; but they need the key and get a request-id too."""

        async def endpoint(request: Request) -> Response:
            try:
                self._check_admin(request)
                response = await handler(request)
            except EmulatorError as exc:
                request_id = self.ids.request_id()
                response = error_response(exc.status, exc.error_type, exc.message, request_id, exc.headers)
                response.headers["request-id"] = request_id
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
                payload = decode_json(await self._read_body(request, _ADMIN_BODY_BYTES))
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
        payload = decode_json(await self._read_body(request, _ADMIN_BODY_BYTES) or b"{}")
        expected = '(expected {"advance": seconds})'
        if not isinstance(payload, dict) or set(payload) - {"advance"}:
            return self._admin_error(f"bad clock change {expected}: give an object with only 'advance'")
        seconds = payload.get("advance", 0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            return self._admin_error(
                f"bad clock change {expected}: advance must be a number; got {_short(str(seconds))}"
            )
        try:
            self.clock.advance(seconds)
        except ValueError as exc:
            return self._admin_error(f"bad clock change {expected}: {exc}")
        return json_response({"now": rfc3339(self.clock.now())})

    async def _admin_attempts(self, request: Request) -> Response:
        """``DELETE``: forget attempt counts; ``GET ?custom_id=X``: how many batches carried X."""
        if request.method == "DELETE":
            self.store.reset_attempts()
            return json_response({"attempts": "reset"})
        custom_id = request.query_params.get("custom_id")
        if not custom_id:
            return self._admin_error("give ?custom_id=... to read its attempt count")
        return json_response({"custom_id": custom_id, "attempts": self.store.attempts(custom_id)})

    async def _admin_results(self, request: Request) -> Response:
        """Change the served bytes of an ended batch's results (a new etag), to test resumes and duplicates."""
        batch_id = request.path_params["batch_id"]
        payload = decode_json(await self._read_body(request, _ADMIN_BODY_BYTES) or b"{}")
        if not isinstance(payload, dict):
            return self._admin_error('give an object: {"reshuffle": true} or {"duplicate_line": N}')
        unknown = sorted(set(payload) - {"reshuffle", "duplicate_line"})
        if unknown:
            return self._admin_error(f"unknown field(s) {', '.join(unknown)}; known: duplicate_line, reshuffle")
        line = payload.get("duplicate_line")
        if line is not None and (isinstance(line, bool) or not isinstance(line, int) or line < 0):
            return self._admin_error("duplicate_line must be an integer >= 0 (a 0-based line number)")
        await asyncio.wrap_future(self.store.results(batch_id))
        etag = self.store.alter_results(batch_id, reshuffle=bool(payload.get("reshuffle")), duplicate_line=line)
        return json_response({"id": batch_id, "etag": etag})


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while a create body is decoded: its ~10 objects per request would trigger
    collection after collection over the growing heap (a third of the decode time), and
    none of them can form a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


#: Fields of a Messages body that only matter for generation; count_tokens refuses them.
_NOT_COUNTED = frozenset({"max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata"})


def _page_query(request: Request) -> tuple[int, str | None, str | None]:
    """``limit``, ``before_id``, ``after_id`` of a list call, checked like the API checks them."""
    query = request.query_params
    raw_limit = query.get("limit", str(DEFAULT_LIST_LIMIT))
    # Digits only: int() would also take " 20", "1_0" and 5,000-digit strings (which raise).
    limit = int(raw_limit) if raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 8 else 0
    if not MIN_LIST_LIMIT <= limit <= MAX_LIST_LIMIT:
        raise EmulatorError(
            400,
            "invalid_request_error",
            f"limit must be an integer from {MIN_LIST_LIMIT} to {MAX_LIST_LIMIT}; got {_short(raw_limit)}",
        )
    before_id, after_id = query.get("before_id") or None, query.get("after_id") or None
    if before_id and after_id:
        raise EmulatorError(400, "invalid_request_error", "give before_id or after_id, not both")
    return limit, before_id, after_id


def _page_response(data: list[dict[str, Any]], has_more: bool) -> Response:
    return json_response(
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


class _BudgetToken:
    """One body's share of the in-flight budget (grows when a chunked body outgrows its estimate)."""

    __slots__ = ("reserved",)

    def __init__(self, reserved: int) -> None:
        self.reserved = reserved


def _content_length(request: Request) -> int | None:
    """The declared content-length, None when absent; garbage is a 400, not an int() crash."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    declared = declared.strip()
    if not declared.isascii() or not declared.isdigit() or len(declared) > _MAX_POSITION_DIGITS:
        raise EmulatorError(400, "invalid_request_error", f"content-length {_short(declared)} is not a byte count")
    return int(declared)


def _parse_range(wanted: str, size: int) -> tuple[int, int]:
    """``(start, end)`` of a ``Range: bytes=...`` header over ``size`` bytes, or the API's 400/416."""
    match = _RANGE_RE.match(wanted.strip())
    if match is None or not wanted.isascii():
        raise EmulatorError(400, "invalid_request_error", f"range {_short(wanted)} is malformed; use bytes=START-[END]")
    first, last = match.group(1), match.group(2)
    if len(first) > _MAX_POSITION_DIGITS or len(last) > _MAX_POSITION_DIGITS:
        raise EmulatorError(
            400,
            "invalid_request_error",
            f"range {_short(wanted)} is malformed: a byte position has at most {_MAX_POSITION_DIGITS} digits",
        )
    start, end = 0, size
    if first:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    elif last:  # suffix range: the last N bytes
        start = max(0, size - int(last))
    if (not first and not last) or start >= size or start >= end:
        raise EmulatorError(
            416,
            "invalid_request_error",
            f"range {_short(wanted)} is not satisfiable for {size} bytes",
            {"content-range": f"bytes */{size}"},
        )
    return start, end


def _garbled(response: Response) -> Response:
    """The same success status with the first half of its JSON body: not valid JSON any more."""
    body = bytes(response.body)
    return Response(body[: len(body) // 2], status_code=response.status_code, media_type="application/json")


async def _delay(seconds: float) -> None:
    if seconds:
        await asyncio.sleep(seconds)


def create_app(config: EmulatorConfig | None = None) -> EmulatorApp:
    """Build an emulator ASGI app (serve it with :func:`~.server.run_emulator` or ``python -m airflow_provider_anthropix.emulator`` to get connection faults)."""
    return EmulatorApp(config)

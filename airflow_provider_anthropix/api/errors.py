"""One exception tree for every way a call to the Message Batches API can fail.

Both clients raise these and nothing else, so callers (the hook, operators, the trigger)
decide on retries and messages in one place. No exception text ever carries the API key:
messages are built from the server's error envelope and the status, never from headers
we sent, and the clients pass a :class:`~airflow_provider_anthropix.api.redact.Redactor`
so that a server or proxy that echoes the key in its error body has it masked too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from airflow_provider_anthropix.api.redact import Redactor


class AnthropixError(Exception):
    """Base of every error this provider raises: the API's, the files', the job's, the estimate's.

    ``retryable`` says whether another try of the task may succeed; it is what
    :func:`airflow_provider_anthropix.failures.airflow_error` turns into a retryable
    ``AirflowException`` or an ``AirflowFailException``. Errors of the API itself (status codes,
    broken connections) decide it from the status and the server's hints instead.
    """

    retryable: bool = False


_KEPT_HEADERS = frozenset({"x-should-retry", "retry-after", "retry-after-ms", "request-id"})


class AnthropixAPIError(AnthropixError):
    """The server answered with an error status.

    :param status: HTTP status code.
    :param error_type: the envelope's ``error.type`` (``invalid_request_error``, ...).
    :param message: the envelope's ``error.message`` or a short description.
    :param request_id: the ``request-id`` header, quoted to support when asking for help.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str = "api_error",
        request_id: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        #: The server's hint in seconds (``retry-after-ms`` / ``retry-after``), when it gave one.
        self.retry_after = retry_after
        #: Response headers that steer retries (``x-should-retry``, ``retry-after``); never request headers.
        self.headers = {k.lower(): v for k, v in (headers or {}).items() if k.lower() in _KEPT_HEADERS}
        self.error_type = error_type
        self.message = message
        self.request_id = request_id
        self.body = body
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"HTTP {self.status} {self.error_type}: {self.message}"
        if self.request_id:
            text += f" (request-id {self.request_id})"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the keyword-only arguments when the exception is pickled between processes.
        return (_rebuild_api_error, (type(self), self.message, self.status, self.error_type, self.request_id))


def _rebuild_api_error(
    cls: type[AnthropixAPIError], message: str, status: int, error_type: str, request_id: str | None
) -> AnthropixAPIError:
    return cls(message, status=status, error_type=error_type, request_id=request_id)


class BadRequestError(AnthropixAPIError):
    """400: the request is wrong; sending it again will not help."""


class AuthenticationError(AnthropixAPIError):
    """401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(AnthropixAPIError):
    """403: the key may not do this (workspace, organisation settings)."""


class NotFoundError(AnthropixAPIError):
    """404: no such batch for this key (or results not available yet)."""


class ConflictError(AnthropixAPIError):
    """409: a conflicting operation; the API marks it as retryable."""


class RequestTooLargeError(AnthropixAPIError):
    """413: the create body is over 256 MB."""


class RateLimitError(AnthropixAPIError):
    """429: slow down; ``retry_after`` holds the server's hint in seconds when it gave one."""


class InternalServerError(AnthropixAPIError):
    """5xx other than 529: a server-side failure, usually transient."""


class OverloadedError(AnthropixAPIError):
    """529: the API is overloaded; retry later."""


class AnthropixConnectionError(AnthropixError):
    """The server could not be reached or the connection broke before a full answer."""

    def __init__(self, message: str, *, maybe_sent: bool = True) -> None:
        #: False only when we know the request never left (e.g. connect refused, DNS failure).
        self.maybe_sent = maybe_sent
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self),), {"maybe_sent": self.maybe_sent})


class AnthropixTimeoutError(AnthropixConnectionError):
    """A connect or read timeout."""


class AnthropixResponseError(AnthropixError):
    retryable = True  # a malformed answer may be a proxy's hiccup: another try of the task may get a good one

    """The server answered with a success status, but not with what the call expects.

    A 200 whose body is not valid JSON, or JSON that is not the object the call returns (a
    count without ``input_tokens``, a batch without an id). Not a connection error: the
    request arrived and was answered, so neither the retry policy nor a poller retries it
    (the same server would most likely give the same answer), and for a create it means the
    batch may well exist.
    """

    #: Another try of the task may meet a good answer (a proxy's hiccup), so the task may retry.
    retryable = True


class ListingError(AnthropixResponseError):
    """A listing that would never end: its cursor does not advance, or it has more pages than allowed.

    A server that answers ``has_more: true`` with a ``last_id`` it gave before (or with new ids
    for ever) would keep a walk through its pages asking until the task is killed; the walk
    stops instead. Like any malformed answer, it is not retried by the client.
    """


class CheckDeadlineError(AnthropixError):
    """A check made before sending (the model check, the token-count sample) ran past its one deadline.

    The deadline is the whole check's, not one attempt's: a server that answers slowly, or
    drips its answer a byte at a time so that no read timeout ever fires, cannot stretch it.
    Not retried by the client: the time is already spent.
    """

    retryable = True


class ResultsChangedError(AnthropixError):
    """The results served on a resume are not the bytes served before; start the download over."""

    retryable = True


class ResultsHostError(AnthropixError):
    """A ``results_url`` points to a host other than the configured API host.

    The API key is not sent there: a forged URL in a batch object must not be able to
    collect the key.
    """


@dataclass(frozen=True)
class ValidationProblem:
    """One thing wrong with a batch request, and where it is."""

    message: str
    index: int | None = None
    custom_id: str | None = None
    file: str | None = None
    line: int | None = None

    def location(self) -> str:
        """``file:line``, ``line N`` or ``requests[i]`` (empty when the problem is about the whole batch)."""
        if self.file is not None:
            return f"{self.file}:{self.line}" if self.line is not None else self.file
        if self.line is not None:
            return f"line {self.line}"
        if self.index is not None:
            return f"requests[{self.index}]"
        return ""

    def __str__(self) -> str:
        where = [part for part in (self.location(), f"custom_id {self.custom_id}" if self.custom_id else "") if part]
        return f"{' '.join(where)}: {self.message}" if where else self.message


@dataclass
class ProblemGroup:
    """Every request with the same problem message: how many, and the first few of them."""

    message: str
    count: int = 0
    examples: list[ValidationProblem] = field(default_factory=list)

    #: How many places a grouped line names before "...".
    EXAMPLES: ClassVar[int] = 5

    def add(self, problem: ValidationProblem) -> None:
        self.count += 1
        if len(self.examples) < self.EXAMPLES:
            self.examples.append(problem)

    def __str__(self) -> str:
        if self.count == 1:
            return str(self.examples[0])
        places = []
        for problem in self.examples:
            where = problem.location()
            if problem.custom_id:
                where = f"{where} (custom_id {problem.custom_id})" if where else f"custom_id {problem.custom_id}"
            places.append(where)
        more = self.count - len(self.examples)
        listed = ", ".join(place for place in places if place)
        tail = f", ... and {more:,} more" if more > 0 else ""
        return f"{self.message} \u2014 {self.count:,} requests: {listed}{tail}"


def group_problems(problems: Iterable[ValidationProblem]) -> list[ProblemGroup]:
    """Identical messages together, in the order they first appear."""
    groups: dict[str, ProblemGroup] = {}
    for problem in problems:
        groups.setdefault(problem.message, ProblemGroup(problem.message)).add(problem)
    return list(groups.values())


class BatchValidationError(AnthropixError):
    """The batch was rejected before anything was sent.

    ``problems`` lists the first few, ``count`` all. The message groups identical problems
    (forgetting ``max_tokens`` is one line saying how many requests, not one line per
    request) and ends with ``hints`` when the caller has a fix for the whole batch.

    :param problems: the problems found (or the first few of them).
    :param count: how many there are in all (default: ``len(problems)``).
    :param shown: how many lines (groups) the message lists.
    :param groups: the problems grouped over the whole input (default: grouped from ``problems``).
    :param hints: lines appended as ``hint: ...``.
    """

    def __init__(
        self,
        problems: list[ValidationProblem],
        *,
        count: int | None = None,
        shown: int = 10,
        groups: list[ProblemGroup] | None = None,
        hints: Sequence[str] = (),
    ) -> None:
        self.problems = list(problems)
        self.count = count if count is not None else len(self.problems)
        self.groups = groups if groups is not None else group_problems(self.problems)
        self.hints = list(hints)
        listed = self.groups[:shown]
        lines = [str(group) for group in listed]
        more = self.count - sum(group.count for group in listed)
        head = f"{self.count} problem{'s' if self.count != 1 else ''} in the batch requests, nothing was sent:"
        text = "\n  ".join([head, *lines])
        if more > 0:
            text += f"\n  ... and {more} more"
        for hint in self.hints:
            text += f"\n  hint: {hint}"
        super().__init__(text)


_STATUS_CLASSES: dict[int, type[AnthropixAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    429: RateLimitError,
    529: OverloadedError,
}

#: The envelope's error type the API pairs with each status it uses.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    """The error type for ``status``: the table's, else ``api_error`` for 5xx, ``invalid_request_error`` for 4xx."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_class_for(status: int) -> type[AnthropixAPIError]:
    """The exception class the API's status maps to."""
    if status in _STATUS_CLASSES:
        return _STATUS_CLASSES[status]
    if status >= 500:
        return InternalServerError
    return BadRequestError


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    retry_after: float | None = None,
    redact: Redactor | None = None,
) -> AnthropixAPIError:
    """Build the right exception from an error response (status, headers, raw body).

    The body is usually the JSON envelope ``{"type": "error", "error": {"type", "message"}}``;
    edges (413, gateways) may send HTML or nothing, in which case a short excerpt is kept.
    With ``redact``, every text taken from the response (message, type, request id, the
    parsed body, kept headers) has the secrets masked, whatever the server put there.
    """
    error_type = error_type_for(status)
    message = ""
    parsed: Any = None
    request_id = headers.get("request-id") or headers.get("x-request-id")
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        err = parsed.get("error")
        if isinstance(err, dict):
            error_type = str(err.get("type") or error_type)
            message = str(err.get("message") or "")
        request_id = request_id or parsed.get("request_id")
    if not message:
        # Redacted before it is cut (below), so the cut cannot split an echoed key past the redactor.
        excerpt = body[:65536].decode("utf-8", "replace") if body else ""
        if redact is not None:
            excerpt = redact(excerpt)
        message = excerpt[:200].strip() or _reason(status)
    if redact is not None:
        message, error_type = redact(message), redact(error_type)
        request_id = redact(str(request_id)) if request_id is not None else None
        parsed = redact.value(parsed)
        headers = {name: redact(str(value)) for name, value in headers.items()}
    return error_class_for(status)(
        message,
        status=status,
        error_type=error_type,
        request_id=request_id,
        body=parsed,
        retry_after=retry_after,
        headers=headers,
    )


def _reason(status: int) -> str:
    reasons = {
        408: "request timeout",
        413: "request body too large (the API accepts at most 256 MB per batch)",
        502: "bad gateway",
        503: "service unavailable",
        504: "gateway timeout",
        529: "overloaded",
    }
    return reasons.get(status, "no error message in the response")

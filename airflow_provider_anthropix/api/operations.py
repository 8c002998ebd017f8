"""The API's methods, defined once for both clients, without any I/O.

Each method of :class:`~airflow_provider_anthropix.api.sync_client.SyncClient` and
:class:`~airflow_provider_anthropix.api.async_client.AsyncClient` that makes one call is an
:class:`Operation`: the :class:`~airflow_provider_anthropix.api.calls.Call` it sends (built
from the client's settings and the method's arguments), the parser of its answer and its
docstring. :class:`ClientBase` lists them once; each client class only knows how to send a
call with its library (its ``_run``), and its binder (:func:`sync_method` or
:func:`async_method`) makes every operation a method of that class with the operation's
signature and docstring, so the two clients cannot drift apart. The bookkeeping of the loops
that send more than one call lives here and in ``api.retry``/``api.resume``: a listing page
by page (:class:`Pager`), a call's retries (``RetryLoop``), a resumed results stream
(``ResumeState``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, NoReturn, ParamSpec, Protocol, TypeVar, overload

from airflow_provider_anthropix.api import bounds, calls
from airflow_provider_anthropix.api.calls import Call
from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.errors import AnthropixResponseError, ListingError
from airflow_provider_anthropix.api.models import BatchPage, DeletedMessageBatch, MessageBatch, ModelInfo, ModelPage
from airflow_provider_anthropix.api.redact import NOTHING, Redactor
from airflow_provider_anthropix.api.retry import RetryLoop

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: What a parser raises for JSON of the wrong shape (a list where an object belongs, no ``id``).
_SHAPE_ERRORS = (ValueError, TypeError, KeyError, AttributeError)


@dataclass(frozen=True)
class Operation(Generic[P, T]):
    """One API method: the call it sends and how its answer becomes the method's value.

    :param name: the method's name on both clients.
    :param build: the call, from the client's settings and the method's own arguments.
    :param parse: the value, from the answer's JSON; raises ``ValueError`` (or another shape
        error) when the JSON is not what the call returns.
    :param doc: the method's docstring.
    """

    name: str
    build: Callable[Concatenate[ClientConfig, P], Call]
    parse: Callable[[Any], T]
    doc: str

    def answer(self, call: Call, status: int, body: bytes, client: ClientBase) -> T:
        """The method's value from a success answer; :class:`AnthropixResponseError` when the body is not one.

        A 2xx that cannot be read is the server's (or a proxy's) fault, not the connection's:
        it is raised as a malformed answer, which neither the retry policy nor a poller retries.
        """
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise client._malformed(call, status, f"the body is not valid JSON ({exc})") from None
        try:
            return self.parse(data)
        except _SHAPE_ERRORS as exc:
            # Redacted whole, then cut: a cut first could split an echoed key past the redactor.
            excerpt = client._redact(json.dumps(data, ensure_ascii=False, default=str))[:200]
            raise client._malformed(call, status, f"{exc}; the answer begins {excerpt!r}") from None

    def signature(self) -> inspect.Signature:
        """The method's signature: ``self`` and the arguments of ``build`` after the settings."""
        built = inspect.signature(self.build)
        arguments = list(built.parameters.values())[1:]
        self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        returns = inspect.signature(self.parse).return_annotation
        return built.replace(parameters=[self_parameter, *arguments], return_annotation=returns)


CREATE_BATCH = Operation(
    "create_batch",
    calls.create_call,
    MessageBatch.from_dict,
    "Submit a batch. Not retried once it may have reached the server (see the retry policy).",
)
GET_BATCH = Operation(
    "get_batch",
    calls.get_call,
    MessageBatch.from_dict,
    "The batch with this id as it is now: its status, request counts and, once ended, its results URL.",
)
LIST_BATCHES = Operation(
    "list_batches",
    calls.list_call,
    BatchPage.from_dict,
    "One page of the key's batches, newest first; ``after_id``/``before_id`` page older/newer.",
)
CANCEL_BATCH = Operation(
    "cancel_batch",
    calls.cancel_call,
    MessageBatch.from_dict,
    "Ask the API to cancel a batch; the answer is the batch, usually ``canceling`` (safe to retry).",
)
DELETE_BATCH = Operation(
    "delete_batch",
    calls.delete_call,
    DeletedMessageBatch.from_dict,
    "Delete an ended batch and its results.",
)
COUNT_TOKENS = Operation(
    "count_tokens",
    calls.count_tokens_call,
    calls.parse_token_count,
    "Input tokens of one request's ``params`` (system prompt and tools included).",
)
LIST_MODELS = Operation(
    "list_models",
    calls.list_models_call,
    ModelPage.from_dict,
    "One page of the models the key may use, newest first.",
)
GET_MODEL = Operation(
    "get_model",
    calls.get_model_call,
    ModelInfo.from_dict,
    "One model; an alias answers with the model it resolves to, an unknown id is a NotFoundError.",
)


class SyncRunner(Protocol):
    def _run(self, operation: Operation[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...


class AsyncRunner(Protocol):
    async def _run(self, operation: Operation[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...


def _dressed(function: Callable[..., Any], operation: Operation[Any, Any]) -> None:
    function.__name__ = operation.name
    function.__doc__ = operation.doc
    function.__signature__ = operation.signature()  # type: ignore[attr-defined]


def sync_method(operation: Operation[P, T]) -> Callable[Concatenate[SyncRunner, P], T]:
    """``operation`` as a method of a blocking client (one that has ``_run``)."""

    def method(self: SyncRunner, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(operation, *args, **kwargs)

    _dressed(method, operation)
    return method


def async_method(operation: Operation[P, T]) -> Callable[Concatenate[AsyncRunner, P], Coroutine[Any, Any, T]]:
    """``operation`` as a coroutine method of a non-blocking client (one that has ``async _run``)."""

    async def method(self: AsyncRunner, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(operation, *args, **kwargs)

    _dressed(method, operation)
    return method


class Method(Generic[P, T]):
    """An operation declared once as a method of both clients.

    Each client class replaces it, when the class is made, by a real method from its own
    binder (:func:`sync_method` or :func:`async_method`, see :meth:`ClientBase.__init_subclass__`);
    the overloads tell the type checker what that method is on each client.
    """

    def __init__(self, operation: Operation[P, T]) -> None:
        self.operation = operation

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Method[P, T]: ...

    @overload
    def __get__(self, client: SyncClientBase, owner: type[Any]) -> Callable[P, T]: ...

    @overload
    def __get__(self, client: AsyncClientBase, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, client: object, owner: type[Any]) -> Any:
        if client is None:
            return self
        raise TypeError(f"{self.operation.name} is bound by the client classes only")


class ClientBase:
    """What both clients hold besides their HTTP library, and the API methods they both have.

    A client class names its binder, e.g. ``class SyncClient(ClientBase, binder=sync_method)``:
    every :class:`Method` below becomes a method of that class, with the operation's name,
    signature and docstring, running through the class's own ``_run``.
    """

    create_batch = Method(CREATE_BATCH)
    get_batch = Method(GET_BATCH)
    list_batches = Method(LIST_BATCHES)
    cancel_batch = Method(CANCEL_BATCH)
    delete_batch = Method(DELETE_BATCH)
    count_tokens = Method(COUNT_TOKENS)
    list_models = Method(LIST_MODELS)
    get_model = Method(GET_MODEL)

    def __init_subclass__(
        cls, *, binder: Callable[[Operation[Any, Any]], Callable[..., Any]] | None = None, **kwargs: Any
    ) -> None:
        """Bind every :class:`Method` with ``binder`` (a subclass of a client keeps its parent's methods)."""
        super().__init_subclass__(**kwargs)
        if binder is None:
            return
        for name, value in vars(ClientBase).items():
            if isinstance(value, Method):
                method = binder(value.operation)
                method.__qualname__ = f"{cls.__qualname__}.{name}"
                method.__module__ = cls.__module__
                setattr(cls, name, method)

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._policy = config.retry_policy()
        self._redact = config.redactor()

    def __repr__(self) -> str:
        config = self.config
        return self._redact(
            f"{type(self).__name__}(base_url={config.base_url!r}, version={config.anthropic_version!r})"
        )

    def _retries(self, call: Call) -> RetryLoop:
        return RetryLoop(self._policy, call.name, idempotent=call.idempotent)

    def _malformed(self, call: Call, status: int, problem: str) -> AnthropixResponseError:
        return calls.malformed_answer(call, status, self.config, self._redact, problem)


class Page(Protocol[T_co]):
    """A page of a listing (:class:`BatchPage`, :class:`ModelPage`)."""

    @property
    def data(self) -> Sequence[T_co]: ...

    @property
    def has_more(self) -> bool: ...

    @property
    def last_id(self) -> str | None: ...


class Pager:
    """Where a walk through a listing is: the ``after_id`` of the next page, and whether there is one.

    The one paging rule of both clients. A walk must end: a page that says ``has_more`` with
    a ``last_id`` already used as a cursor (the same page again, or a loop) raises
    :class:`ListingError` instead of asking for ever, and so does a page past ``max_pages``.

    :param what: the listing, for messages (``"the model list"``).
    :param max_pages: pages the walk may fetch (None: no cap; the cursor rule still holds).
    :param redact: masks secrets in the messages (a cursor is the server's text).
    """

    def __init__(self, what: str = "the listing", *, max_pages: int | None = None, redact: Redactor = NOTHING) -> None:
        if max_pages is not None and max_pages < 1:
            raise ValueError(f"max_pages must be 1 or more, got {max_pages}")
        self.after_id: str | None = None
        self.more = True
        self.pages = 0
        self._what = what
        self._max_pages = max_pages
        self._redact = redact
        self._cursors: set[str] = set()

    def take(self, page: Page[T]) -> Sequence[T]:
        """The items of the page just fetched; moves on to the next page (or to the end)."""
        self.pages += 1
        more = bool(page.has_more and page.last_id)
        if more:
            cursor = str(page.last_id)
            if cursor in self._cursors:
                shown = self._redact(repr(cursor))[:80]
                self._refuse(
                    f"page {self.pages} says has_more with last_id {shown}, a cursor it gave before: the listing "
                    "does not advance, so the walk stopped instead of asking for the same pages for ever"
                )
            if self._max_pages is not None and self.pages >= self._max_pages:
                self._refuse(
                    f"it still says has_more after {self.pages:,} pages, the most this walk fetches; "
                    "stopped instead of paging without end"
                )
            self._cursors.add(cursor)
        self.more = more
        self.after_id = page.last_id
        return page.data

    def _refuse(self, problem: str) -> NoReturn:
        text = f"{self._what}: {problem}"
        bound = bounds.current()
        if bound is not None and bound.skip:
            text += f". It was {bound.what}; to go on without it, {bound.skip}"
        raise ListingError(text)


class SyncClientBase(ClientBase):
    """The blocking client's base: every API method runs through a blocking ``_run``.

    It lives here, not in ``sync_client``, so that the type of each :class:`Method` on the
    blocking client is known without this module importing the clients (no import cycle).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(binder=sync_method, **kwargs)


class AsyncClientBase(ClientBase):
    """The non-blocking client's base: every API method is a coroutine over ``async _run``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(binder=async_method, **kwargs)

"""Typed views of the objects the Message Batches API returns.

The API adds fields without notice, so every object keeps the dict it was built from
(``raw``) and parsing ignores what it does not know. Timestamps become pendulum
DateTimes; a missing or null timestamp stays ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pendulum
from pendulum import DateTime

RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")


def parse_timestamp(value: Any) -> DateTime | None:
    """Parse an RFC 3339 timestamp (``2026-11-25T07:39:47.123456Z``) or return None for null/absent."""
    if value is None or value == "":
        return None
    if isinstance(value, DateTime):
        return value
    parsed = pendulum.parse(str(value))
    if not isinstance(parsed, DateTime):
        raise ValueError(f"not a timestamp: {value!r}")
    return parsed


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


@dataclass(frozen=True)
class RequestCounts:
    """How many requests of a batch are in each state; they always add up to the batch size."""

    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RequestCounts:
        data = data or {}
        return cls(
            processing=_int(data.get("processing")),
            succeeded=_int(data.get("succeeded")),
            errored=_int(data.get("errored")),
            canceled=_int(data.get("canceled")),
            expired=_int(data.get("expired")),
        )

    @property
    def total(self) -> int:
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired

    @property
    def done(self) -> int:
        """Requests that have left ``processing``."""
        return self.total - self.processing

    def to_dict(self) -> dict[str, int]:
        return {
            "processing": self.processing,
            "succeeded": self.succeeded,
            "errored": self.errored,
            "canceled": self.canceled,
            "expired": self.expired,
        }


@dataclass(frozen=True)
class MessageBatch:
    """One batch as the API last described it."""

    id: str
    processing_status: str
    request_counts: RequestCounts
    created_at: DateTime | None = None
    expires_at: DateTime | None = None
    ended_at: DateTime | None = None
    cancel_initiated_at: DateTime | None = None
    archived_at: DateTime | None = None
    results_url: str | None = None
    type: str = "message_batch"
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MessageBatch:
        if not isinstance(data, Mapping) or not data.get("id"):
            raise ValueError(f"not a message batch object ({_shape_of(data)})")
        return cls(
            id=str(data["id"]),
            type=str(data.get("type") or "message_batch"),
            processing_status=str(data.get("processing_status") or ""),
            request_counts=RequestCounts.from_dict(data.get("request_counts")),
            created_at=parse_timestamp(data.get("created_at")),
            expires_at=parse_timestamp(data.get("expires_at")),
            ended_at=parse_timestamp(data.get("ended_at")),
            cancel_initiated_at=parse_timestamp(data.get("cancel_initiated_at")),
            archived_at=parse_timestamp(data.get("archived_at")),
            results_url=data.get("results_url") or None,
            raw=dict(data),
        )

    @property
    def is_ended(self) -> bool:
        return self.processing_status == "ended"

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    def to_dict(self) -> dict[str, Any]:
        """The batch as plain JSON values (the API's own dict), safe for XCom and trigger events."""
        return dict(self.raw) if self.raw else self._rebuild_dict()

    def _rebuild_dict(self) -> dict[str, Any]:
        def iso(value: DateTime | None) -> str | None:
            return value.to_iso8601_string() if value is not None else None

        return {
            "id": self.id,
            "type": self.type,
            "processing_status": self.processing_status,
            "request_counts": self.request_counts.to_dict(),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "ended_at": iso(self.ended_at),
            "cancel_initiated_at": iso(self.cancel_initiated_at),
            "archived_at": iso(self.archived_at),
            "results_url": self.results_url,
        }


def _shape_of(data: Any) -> str:
    """What a wrong answer is, without quoting it: a server may echo the key in it (callers
    that can redact add an excerpt themselves, see :meth:`~.operations.Operation.answer`)."""
    if isinstance(data, Mapping):
        return "an object without an id" if not data.get("id") else "an object"
    return f"a JSON {type(data).__name__}"


def _page_fields(data: Any, item: Callable[[Any], Any]) -> dict[str, Any]:
    """The fields of one page of a listing: batches and models are paged alike."""
    if not isinstance(data, Mapping):
        raise ValueError(f"not a page of a listing ({_shape_of(data)})")
    return {
        "data": [item(entry) for entry in data.get("data") or []],
        "has_more": bool(data.get("has_more")),
        "first_id": data.get("first_id"),
        "last_id": data.get("last_id"),
    }


@dataclass(frozen=True)
class BatchPage:
    """One page of the list endpoint, newest batch first."""

    data: list[MessageBatch]
    has_more: bool
    first_id: str | None
    last_id: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchPage:
        return cls(**_page_fields(data, MessageBatch.from_dict))


@dataclass(frozen=True)
class DeletedMessageBatch:
    """What a delete returns."""

    id: str
    type: str = "message_batch_deleted"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeletedMessageBatch:
        return cls(id=str(data.get("id", "")), type=str(data.get("type") or "message_batch_deleted"))


@dataclass(frozen=True)
class EncodedBody:
    """A create body that is already JSON-encoded and can be streamed more than once.

    Large batches are encoded straight from their source file instead of being built as a
    list of dicts: ``chunks`` is called once per send attempt and yields the body's bytes,
    ``size`` is their total length (sent as content-length, checked against the API's limit).
    """

    chunks: Callable[[], Iterable[bytes]]
    size: int
    request_count: int = 0


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the model list (``GET /v1/models``)."""

    id: str
    display_name: str = ""
    created_at: DateTime | None = None
    type: str = "model"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        if not isinstance(data, Mapping) or not data.get("id"):
            raise ValueError(f"not a model object ({_shape_of(data)})")
        return cls(
            id=str(data["id"]),
            display_name=str(data.get("display_name") or ""),
            created_at=parse_timestamp(data.get("created_at")),
            type=str(data.get("type") or "model"),
        )


@dataclass(frozen=True)
class ModelPage:
    """One page of the model list, newest model first (same paging as the batch list)."""

    data: list[ModelInfo]
    has_more: bool
    first_id: str | None
    last_id: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelPage:
        return cls(**_page_fields(data, ModelInfo.from_dict))


#: The params a token count accepts (a Messages body without max_tokens and the sampling/batch-only fields).
COUNT_TOKENS_PARAMS = ("model", "messages", "system", "tools", "tool_choice", "thinking")


def count_tokens_body(params: Mapping[str, Any]) -> dict[str, Any]:
    """The body of ``POST /v1/messages/count_tokens`` for a request's ``params``.

    The endpoint rejects what only a create takes (``max_tokens``, ``stop_sequences``,
    ``metadata``, sampling settings), so only the fields that make up the prompt are kept.
    """
    return {key: params[key] for key in COUNT_TOKENS_PARAMS if key in params}

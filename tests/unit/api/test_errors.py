"""Error mapping: every HTTP status the Message Batches API answers with lands on its own class, with the envelope's details."""

from __future__ import annotations

import json
import pickle

import pytest

from airflow_provider_anthropix.api import errors
from airflow_provider_anthropix.api.errors import error_from_response


def envelope(kind: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_body"}).encode()


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("status", "kind", "cls"),
    [
        (400, "invalid_request_error", errors.BadRequestError),
        (401, "authentication_error", errors.AuthenticationError),
        (403, "permission_error", errors.PermissionDeniedError),
        (404, "not_found_error", errors.NotFoundError),
        (409, "conflict_error", errors.ConflictError),
        (413, "request_too_large", errors.RequestTooLargeError),
        (429, "rate_limit_error", errors.RateLimitError),
        (500, "api_error", errors.InternalServerError),
        (502, "api_error", errors.InternalServerError),
        (503, "api_error", errors.InternalServerError),
        (529, "overloaded_error", errors.OverloadedError),
        (418, "invalid_request_error", errors.BadRequestError),
    ],
)
def test_status_maps_to_class_with_envelope_details(status: int, kind: str, cls: type) -> None:
    exc = error_from_response(status, {"request-id": "req_123"}, envelope(kind, "something is off"))
    assert type(exc) is cls
    assert exc.status == status
    assert exc.error_type == kind
    assert exc.message == "something is off"
    assert exc.request_id == "req_123"
    assert "req_123" in str(exc)
    assert f"HTTP {status}" in str(exc)


def test_request_id_falls_back_to_body() -> None:
    exc = error_from_response(500, {}, envelope("api_error", "boom"))
    assert exc.request_id == "req_body"


def test_non_json_body_from_the_edge_is_kept_as_excerpt() -> None:
    exc = error_from_response(413, {}, b"<html>Request Entity Too Large</html>")
    assert isinstance(exc, errors.RequestTooLargeError)
    assert exc.error_type == "request_too_large"
    assert "Request Entity Too Large" in exc.message


def test_empty_body_gets_a_reason() -> None:
    exc = error_from_response(504, {}, b"")
    assert isinstance(exc, errors.InternalServerError)
    assert exc.message == "gateway timeout"


def test_rate_limit_carries_retry_after_and_steering_headers_only() -> None:
    exc = error_from_response(
        429,
        {"Retry-After": "3", "X-Should-Retry": "true", "x-api-key": "sk-secret"},
        envelope("rate_limit_error", "slow down"),
        retry_after=3.0,
    )
    assert isinstance(exc, errors.RateLimitError)
    assert exc.retry_after == 3.0
    assert exc.headers == {"retry-after": "3", "x-should-retry": "true"}
    assert "sk-secret" not in repr(exc.__dict__)


def test_api_error_survives_pickling() -> None:
    exc = error_from_response(404, {"request-id": "req_9"}, envelope("not_found_error", "no batch"))
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is errors.NotFoundError
    assert (clone.status, clone.error_type, clone.message, clone.request_id) == (
        404,
        "not_found_error",
        "no batch",
        "req_9",
    )


def test_validation_error_lists_first_problems_and_count() -> None:
    problems = [
        errors.ValidationProblem(f"params.max_tokens is {n}", file="in.jsonl", line=n, custom_id=f"q-{n}")
        for n in range(30)
    ]
    exc = errors.BatchValidationError(problems, shown=3)
    text = str(exc)
    assert text.startswith("30 problems")
    assert "in.jsonl:0 custom_id q-0: params.max_tokens is 0" in text
    assert "in.jsonl:3" not in text
    assert "... and 27 more" in text


def test_validation_error_groups_identical_messages() -> None:
    problems = [errors.ValidationProblem("params.model is missing", line=n + 1, custom_id=f"q-{n}") for n in range(7)]
    problems.insert(1, errors.ValidationProblem("other", line=99))
    text = str(errors.BatchValidationError(problems, shown=2))
    assert text.splitlines()[1:] == [
        "  params.model is missing \u2014 7 requests: line 1 (custom_id q-0), line 2 (custom_id q-1), "
        "line 3 (custom_id q-2), line 4 (custom_id q-3), line 5 (custom_id q-4), ... and 2 more",
        "  line 99: other",
    ]

"""The wire protocol of the Message Batches API: models, errors, retries, sync and async clients.

Nothing in this package imports Airflow, so it can be used (and tested) on its own.
"""

from __future__ import annotations

from airflow_provider_anthropix.api.async_client import AsyncClient, shared_async_client
from airflow_provider_anthropix.api.config import ClientConfig
from airflow_provider_anthropix.api.errors import (
    AnthropixAPIError,
    AnthropixConnectionError,
    AnthropixError,
    AnthropixTimeoutError,
    AuthenticationError,
    BadRequestError,
    BatchValidationError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    ResultsHostError,
    ValidationProblem,
)
from airflow_provider_anthropix.api.models import (
    BatchPage,
    DeletedMessageBatch,
    EncodedBody,
    MessageBatch,
    ModelInfo,
    ModelPage,
    RequestCounts,
)
from airflow_provider_anthropix.api.resume import ResultsChangedError
from airflow_provider_anthropix.api.retry import RetryPolicy
from airflow_provider_anthropix.api.sync_client import SyncClient

__all__ = [
    "AnthropixAPIError",
    "AnthropixConnectionError",
    "AnthropixError",
    "AnthropixTimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchPage",
    "BatchValidationError",
    "ClientConfig",
    "ConflictError",
    "DeletedMessageBatch",
    "EncodedBody",
    "InternalServerError",
    "MessageBatch",
    "ModelInfo",
    "ModelPage",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestCounts",
    "RequestTooLargeError",
    "ResultsChangedError",
    "ResultsHostError",
    "RetryPolicy",
    "SyncClient",
    "ValidationProblem",
    "shared_async_client",
]

"""The wire protocol of the Message Batches API: models, errors, retries, sync and async clients.

Nothing in this package imports Airflow, so it can be used (and tested) on its own.

Names are imported on first use, not with the package: a DAG file that imports an operator
must not pay for the HTTP clients (``requests``, ``httpx``) while the dag-processor parses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_anthropix._lazy import lazy_exports

if TYPE_CHECKING:
    from airflow_provider_anthropix.api.async_client import (
        AsyncClient,
        shared_async_client,
    )
    from airflow_provider_anthropix.api.config import (
        ClientConfig,
    )
    from airflow_provider_anthropix.api.errors import (
        AnthropixAPIError,
        AnthropixConnectionError,
        AnthropixError,
        AnthropixResponseError,
        AnthropixTimeoutError,
        AuthenticationError,
        BadRequestError,
        BatchValidationError,
        CheckDeadlineError,
        ConflictError,
        InternalServerError,
        ListingError,
        NotFoundError,
        OverloadedError,
        PermissionDeniedError,
        RateLimitError,
        RequestTooLargeError,
        ResultsChangedError,
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
    from airflow_provider_anthropix.api.retry import (
        RetryPolicy,
    )
    from airflow_provider_anthropix.api.sync_client import (
        SyncClient,
    )

#: Public name -> the module that defines it, imported on first access.
_LAZY: dict[str, str] = {
    "AnthropixAPIError": "airflow_provider_anthropix.api.errors",
    "AnthropixConnectionError": "airflow_provider_anthropix.api.errors",
    "AnthropixError": "airflow_provider_anthropix.api.errors",
    "AnthropixResponseError": "airflow_provider_anthropix.api.errors",
    "AnthropixTimeoutError": "airflow_provider_anthropix.api.errors",
    "AsyncClient": "airflow_provider_anthropix.api.async_client",
    "AuthenticationError": "airflow_provider_anthropix.api.errors",
    "BadRequestError": "airflow_provider_anthropix.api.errors",
    "BatchPage": "airflow_provider_anthropix.api.models",
    "BatchValidationError": "airflow_provider_anthropix.api.errors",
    "CheckDeadlineError": "airflow_provider_anthropix.api.errors",
    "ClientConfig": "airflow_provider_anthropix.api.config",
    "ConflictError": "airflow_provider_anthropix.api.errors",
    "DeletedMessageBatch": "airflow_provider_anthropix.api.models",
    "EncodedBody": "airflow_provider_anthropix.api.models",
    "InternalServerError": "airflow_provider_anthropix.api.errors",
    "ListingError": "airflow_provider_anthropix.api.errors",
    "MessageBatch": "airflow_provider_anthropix.api.models",
    "ModelInfo": "airflow_provider_anthropix.api.models",
    "ModelPage": "airflow_provider_anthropix.api.models",
    "NotFoundError": "airflow_provider_anthropix.api.errors",
    "OverloadedError": "airflow_provider_anthropix.api.errors",
    "PermissionDeniedError": "airflow_provider_anthropix.api.errors",
    "RateLimitError": "airflow_provider_anthropix.api.errors",
    "RequestCounts": "airflow_provider_anthropix.api.models",
    "RequestTooLargeError": "airflow_provider_anthropix.api.errors",
    "ResultsChangedError": "airflow_provider_anthropix.api.errors",
    "ResultsHostError": "airflow_provider_anthropix.api.errors",
    "RetryPolicy": "airflow_provider_anthropix.api.retry",
    "SyncClient": "airflow_provider_anthropix.api.sync_client",
    "ValidationProblem": "airflow_provider_anthropix.api.errors",
    "shared_async_client": "airflow_provider_anthropix.api.async_client",
}


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)

__all__ = [
    "AnthropixAPIError",
    "AnthropixConnectionError",
    "AnthropixError",
    "AnthropixResponseError",
    "AnthropixTimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchPage",
    "BatchValidationError",
    "CheckDeadlineError",
    "ClientConfig",
    "ConflictError",
    "DeletedMessageBatch",
    "EncodedBody",
    "InternalServerError",
    "ListingError",
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

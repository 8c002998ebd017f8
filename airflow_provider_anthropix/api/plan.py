"""The options a batch job's plan is cut by: one typed object for the job's identity, its fingerprint and its files.

They live beside the API's limits because they are the API's terms (a batch's request and
byte limits, the version whose rules the requests are validated by, the params merged into
each request); the workflow layer keys and fingerprints jobs by them and ``io/`` splits by
them, and neither has to import the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_anthropix.api.limits import DEFAULT_API_VERSION, MAX_BODY_BYTES, MAX_REQUESTS


@dataclass(frozen=True)
class PlanOptions:
    """The options that shape a job's shards: one object feeds both the job's identity and its files.

    A resumed job compares them (through the fingerprint) with the ones it was planned with,
    so an option added here is checked everywhere at once.

    :param default_params: merged under every request's params.
    :param max_requests_per_batch: most requests in one shard.
    :param max_bytes_per_batch: largest create body of one shard.
    :param api_version: the validation rules the requests were checked by.
    """

    default_params: Mapping[str, Any] | None = None
    max_requests_per_batch: int = MAX_REQUESTS
    max_bytes_per_batch: int = MAX_BODY_BYTES
    api_version: str = DEFAULT_API_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "default_params": dict(self.default_params) if self.default_params is not None else None,
            "max_requests_per_batch": self.max_requests_per_batch,
            "max_bytes_per_batch": self.max_bytes_per_batch,
            "api_version": self.api_version,
        }

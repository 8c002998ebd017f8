"""Limits and constants of the Message Batches API, in one place for clients, validation and the emulator."""

from __future__ import annotations

import re

#: Most requests one batch may hold.
MAX_REQUESTS = 100_000
#: Largest JSON body a create may send (the edge answers 413 above it).
MAX_BODY_BYTES = 256 * 1024 * 1024
#: custom_id: 1-64 characters of letters, digits, underscore and hyphen. Use ``fullmatch``: with
#: ``match`` the ``$`` also accepts a trailing newline. (Arrow's RE2 reads it as it is written.)
CUSTOM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: API versions the service accepts; the first one is the current one.
API_VERSIONS = ("2026-10-21", "2023-06-01")
DEFAULT_API_VERSION = "2026-10-21"
DEFAULT_BASE_URL = "https://api.anthropic.com"
#: Page size bounds of the list endpoint.
MIN_LIST_LIMIT = 1
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 20


def check_api_version(api_version: str) -> str | None:
    """Why ``api_version`` is not an ``anthropic-version`` the API serves, or None when it is one.

    The one version check: the client settings, the connection reader, the request
    validator and the emulator all ask it, so they accept and word the same versions.
    """
    if api_version in API_VERSIONS:
        return None
    return f"unknown anthropic-version {api_version!r}; use one of {', '.join(API_VERSIONS)}"


def check_batch_limits(max_requests: int, max_body_bytes: int) -> None:
    """Refuse shard limits the API would not take (raises ValueError naming the argument)."""
    if not 1 <= max_requests <= MAX_REQUESTS:
        raise ValueError(f"max_requests_per_batch must be 1 to {MAX_REQUESTS:,}, got {max_requests}")
    if not 1024 <= max_body_bytes <= MAX_BODY_BYTES:
        raise ValueError(f"max_bytes_per_batch must be 1,024 to {MAX_BODY_BYTES:,}, got {max_body_bytes}")

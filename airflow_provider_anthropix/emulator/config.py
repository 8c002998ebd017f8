"""Settings of one emulator instance, shared by the CLI, the context manager and the app."""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_provider_anthropix.api.limits import MAX_BODY_BYTES, MAX_REQUESTS
from airflow_provider_anthropix.emulator.faults import Fault

DAY = 86_400.0


@dataclass
class EmulatorConfig:
    """How the emulated API behaves.

    :param api_key: the only key accepted; ``None`` accepts any non-empty key (a missing key is still 401).
    :param processing_seconds: how long every batch takes to end; ``request_counts`` move over that time.
    :param seed: drives outcomes (with ``error_rate``), result order and message ids, so runs repeat.
    :param error_rate: share of requests (0-1) whose result is ``errored`` (``api_error``), drawn
        by seed and custom_id on a request's first attempt (see ``rates_every_attempt``).
    :param expire_rate: share of requests (0-1) whose result is ``expired``, drawn the same way.
    :param rates_every_attempt: roll ``error_rate``/``expire_rate`` on every attempt of a custom_id,
        not only on its first batch (so a retry round can fail again).
    :param cancel_seconds: how long a canceled batch stays ``canceling`` before it ends.
    :param expiry_seconds: a batch that has not ended this long after creation expires (API: 24 h).
    :param archive_seconds: results are archived (download fails) this long after creation (API: 29 days).
    :param result_bytes: approximate size of one succeeded result line; 1024 makes 100,000 results ~100 MB.
    :param max_requests: most requests a batch may hold (lower it to test the limit cheaply).
    :param max_body_bytes: largest create body accepted; above it the answer is 413.
    :param admin: serve the ``/_emulator/*`` admin endpoints (faults, stats, reset, clock).
    :param faults: faults armed from the start (e.g. from ``--fault`` flags).
    :param chunk_bytes: size of the pieces the results stream is sent in.
    :param header_seconds: a request's line and headers must arrive within this time (slow-loris guard).
    :param max_header_bytes: the most bytes a request line plus headers may take (else 431).
    :param body_seconds: a request body must arrive within this time (else 408).
    :param keep_alive_seconds: an idle keep-alive connection is closed after this time.
    :param max_inflight_body_bytes: the most bytes of request bodies being received or decoded at
        once, over all clients; a body that does not fit gets a 503 with ``retry-after``.
    """

    api_key: str | None = None
    processing_seconds: float = 2.0
    seed: int = 0
    error_rate: float = 0.0
    expire_rate: float = 0.0
    rates_every_attempt: bool = False
    cancel_seconds: float = 0.5
    expiry_seconds: float = DAY
    archive_seconds: float = 29 * DAY
    result_bytes: int = 1024
    max_requests: int = MAX_REQUESTS
    max_body_bytes: int = MAX_BODY_BYTES
    admin: bool = False
    faults: list[Fault] = field(default_factory=list)
    chunk_bytes: int = 256 * 1024
    header_seconds: float = 10.0
    max_header_bytes: int = 64 * 1024
    body_seconds: float = 60.0
    keep_alive_seconds: float = 5.0
    max_inflight_body_bytes: int = 4 * MAX_BODY_BYTES

    def __post_init__(self) -> None:
        for name in ("error_rate", "expire_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1; got {getattr(self, name)}")
        for name in ("processing_seconds", "cancel_seconds", "expiry_seconds", "archive_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if self.chunk_bytes < 1:
            raise ValueError("chunk_bytes must be >= 1")
        for name in ("header_seconds", "body_seconds", "keep_alive_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        for name in ("max_header_bytes", "max_inflight_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")

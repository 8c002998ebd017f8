"""Faults a test can arm so failure handling is exercised over real sockets.

A fault matches calls of one endpoint (or ``*`` for all API endpoints) and fires for its
next ``count`` matching calls (``None``: every call). Kinds:

- ``status``: answer HTTP ``status`` with the API's error envelope (``retry_after`` sets
  ``retry-after``, ``should_retry`` sets ``x-should-retry``), without doing the call;
- ``latency``: answer ``seconds`` late; the call itself is carried out first, so a slow
  create still creates its batch (stacks with the others);
- ``reset``: abort the connection with a TCP RST before answering;
- ``drop``: do the call (a create really creates the batch), then close the connection
  without an answer, like a response lost on the way back;
- ``cut``: results only: send the first ``after_bytes`` bytes of the body, then abort;
- ``garble``: do the call, then answer its success status with half of the JSON body, like a
  proxy that truncates answers (a create really creates the batch). Not for results.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any

ENDPOINTS = ("create", "retrieve", "list", "cancel", "delete", "results", "count_tokens", "models")
KINDS = ("status", "latency", "reset", "drop", "cut", "garble")
#: The longest latency or retry-after a fault may ask for: longer only hangs a test.
MAX_FAULT_SECONDS = 3600.0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_seconds(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_FAULT_SECONDS
    )


@dataclass
class Fault:
    """One armed fault (see the module docstring for the kinds)."""

    kind: str
    endpoint: str = "*"
    count: int | None = 1
    status: int = 500
    retry_after: float | None = None
    should_retry: bool | None = None
    seconds: float = 0.0
    after_bytes: int = 0
    message: str | None = None

    def __post_init__(self) -> None:
        # Fields arrive from JSON too (the admin endpoint): check types before comparing values.
        for name in ("kind", "endpoint"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string; got {getattr(self, name)!r}")
        if self.count is not None and not _is_int(self.count):
            raise ValueError(f"count must be an integer >= 1 or null; got {self.count!r}")
        if not _is_int(self.status) or not _is_int(self.after_bytes):
            raise ValueError("status and after_bytes must be integers")
        if not _is_seconds(self.seconds) or (self.retry_after is not None and not _is_seconds(self.retry_after)):
            raise ValueError(f"seconds and retry_after must be numbers from 0 to {MAX_FAULT_SECONDS:g}")
        if self.should_retry is not None and not isinstance(self.should_retry, bool):
            raise ValueError(f"should_retry must be true, false or null; got {self.should_retry!r}")
        if self.message is not None and not isinstance(self.message, str):
            raise ValueError("message must be a string or null")
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.endpoint != "*" and self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; use '*' or one of {', '.join(ENDPOINTS)}")
        if self.kind == "cut" and self.endpoint not in ("results", "*"):
            raise ValueError("a 'cut' fault applies to the results endpoint only")
        if self.kind == "garble" and self.endpoint == "results":
            raise ValueError("a 'garble' fault applies to the JSON endpoints, not to results (use 'cut')")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be >= 1, or null for every call")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code; got {self.status}")
        if self.after_bytes < 0:
            raise ValueError("after_bytes must be >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Build from JSON (the admin endpoint's body); unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if not isinstance(data, dict):
            raise ValueError(f"a fault is an object with a 'kind'; got {type(data).__name__}")
        if "kind" not in data:
            raise ValueError("a fault needs a 'kind'")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the admin endpoint lists it."""
        return asdict(self)


def _coerce(name: str, text: str) -> Any:
    if name in ("kind", "endpoint", "message"):
        return text
    if name == "count":
        return None if text in ("*", "always", "inf") else int(text)
    if name in ("status", "after_bytes"):
        return int(text)
    if name == "should_retry":
        return text.lower() in ("1", "true", "yes")
    return float(text)


def parse_fault_spec(spec: str) -> Fault:
    """Parse a ``--fault`` flag: ``KIND,key=value,...`` e.g. ``status,endpoint=retrieve,status=529,count=3``.

    The keys are the :class:`Fault` fields; ``count=*`` means every call.
    """
    data: dict[str, Any] = {}
    known = {f.name for f in fields(Fault)}
    for i, part in enumerate(p.strip() for p in spec.split(",") if p.strip()):
        if "=" not in part:
            if i == 0:
                data["kind"] = part
                continue
            raise ValueError(f"bad fault spec part {part!r}: expected key=value")
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in known:
            raise ValueError(f"unknown fault field {key!r}; known: {', '.join(sorted(known))}")
        data[key] = _coerce(key, value.strip())
    return Fault.from_dict(data)


class FaultBook:
    """The armed faults, consumed by calls from the server thread and armed from any thread."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = list(faults or [])
        self.fired = 0

    def add(self, fault: Fault) -> None:
        """Arm one more fault; it fires after those armed earlier for the same calls."""
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        """The faults still armed, with their remaining counts."""
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def take(self, endpoint: str) -> tuple[float, Fault | None]:
        """Consume what applies to one call: total added latency, and the first other fault.

        The common case (nothing armed) returns without taking the lock.
        """
        if not self._faults:
            return 0.0, None
        latency = 0.0
        action: Fault | None = None
        with self._lock:
            for fault in list(self._faults):
                if fault.endpoint not in ("*", endpoint):
                    continue
                if fault.kind == "cut" and endpoint != "results":
                    continue
                if fault.kind == "latency":
                    latency += fault.seconds
                elif action is None:
                    action = fault
                else:
                    continue
                self.fired += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
        return latency, action

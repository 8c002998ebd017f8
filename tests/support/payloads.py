"""API payloads built in memory: result lines, a mixed results stream, an ended batch object."""

from __future__ import annotations

import json
from typing import Any


def result_line(
    custom_id: str,
    kind: str = "succeeded",
    *,
    model: str = "claude-sonnet-4-5-20250929",
    text: str = "hello",
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_write: int = 0,
    cache_read: int = 0,
    error_type: str = "api_error",
    padding: int = 0,
) -> bytes:
    """One results line as the API sends it (compact JSON with a newline)."""
    result: dict[str, Any] = {"type": kind}
    if kind == "succeeded":
        result["message"] = {
            "id": f"msg_{custom_id}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text + " " * padding}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": cache_read,
            },
        }
    elif kind == "errored":
        result["error"] = {"type": "error", "error": {"type": error_type, "message": f"{error_type} for {custom_id}"}}
    return json.dumps({"custom_id": custom_id, "result": result}, separators=(",", ":")).encode() + b"\n"


def mixed_results(n: int, *, padding: int = 0) -> bytes:
    """``n`` lines: every 10th errored, every 25th canceled, every 50th expired, the rest succeeded."""
    lines = []
    for i in range(n):
        if i % 50 == 49:
            kind = "expired"
        elif i % 25 == 24:
            kind = "canceled"
        elif i % 10 == 9:
            kind = "errored"
        else:
            kind = "succeeded"
        lines.append(result_line(f"req-{i}", kind, text=f"answer {i}", padding=padding))
    return b"".join(lines)


def counts_of(data: bytes) -> dict[str, int]:
    """How many lines of a results stream have each outcome (blank lines skipped)."""
    counts = dict.fromkeys(("succeeded", "errored", "canceled", "expired"), 0)
    for line in data.splitlines():
        if line.strip():
            counts[json.loads(line)["result"]["type"]] += 1
    return counts


def chunked(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into pieces of ``size`` bytes, the way a stream arrives."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def ended_batch_json(results_url: str) -> dict[str, Any]:
    """An ended batch ``msgbatch_forged`` as the API returns it, pointing at ``results_url``.

    For tests whose server hands out a ``results_url`` of its choosing (a forged or hostile one).
    """
    return {
        "id": "msgbatch_forged",
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0},
        "created_at": "2026-11-25T00:00:00Z",
        "expires_at": "2026-11-26T00:00:00Z",
        "ended_at": "2026-11-25T00:01:00Z",
        "cancel_initiated_at": None,
        "archived_at": None,
        "results_url": results_url,
    }

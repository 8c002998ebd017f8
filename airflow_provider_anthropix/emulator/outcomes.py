"""What each request of a batch turns into, and the bytes of its result line.

A request's outcome depends only on the seed and its custom_id (plus the error rate), so
a test that reruns gets the same results. A marker in the request's message text forces
one outcome regardless of the dice:

    [[emulator:succeeded]]            always succeeds
    [[emulator:errored]]              errored with api_error
    [[emulator:errored:TYPE]]         errored with TYPE (e.g. invalid_request_error, overloaded_error)
    [[emulator:canceled]]             canceled when the batch ends
    [[emulator:expired]]              expired when the batch ends

Only what rendering needs is kept per request (custom_id, model, a prompt snippet,
token estimates), never the whole params: a 100,000-request batch stays small.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from airflow_provider_anthropix.emulator.ids import message_id

SUCCEEDED = "succeeded"
ERRORED = "errored"
CANCELED = "canceled"
EXPIRED = "expired"

MARKER_RE = re.compile(r"\[\[emulator:(succeeded|errored|canceled|expired)(?::([a-z_]+))?\]\]")
_MARKER_HINT = "[[emulator:"

_ERROR_MESSAGES = {
    "api_error": "Internal server error while processing this request (emulated).",
    "invalid_request_error": "This request is invalid and will not succeed if resubmitted as is (emulated).",
    "overloaded_error": "Overloaded (emulated).",
}

_FILLER = (
    "The emulator pads this reply so that result files have the size of real ones. "
    "It repeats plain words without any meaning, in the spirit of lorem ipsum, because "
    "exporters, parsers and benchmarks care about bytes, lines and token counts, not prose. "
) * 200
#: Where the filler's words start: padding begins and ends on a word boundary, never mid-word.
_WORD_STARTS = [0] + [i + 1 for i, ch in enumerate(_FILLER[:2000]) if ch == " "]


def _cut_at_word(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at the last word boundary before it."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    if text[limit] == " ":
        return head
    space = head.rfind(" ")
    return head[:space] if space > 0 else head


@dataclass(slots=True)
class Entry:
    """The part of one batch request that its result needs."""

    custom_id: str
    model: str
    outcome: str
    error_type: str | None
    snippet: str
    input_tokens: int
    max_tokens: int


def _texts(params: Mapping[str, Any]) -> tuple[list[str], str]:
    """All text of the request, and the last user turn's text (the 'prompt' a reply echoes)."""
    texts: list[str] = []
    prompt = ""
    system = params.get("system")
    if isinstance(system, str):
        texts.append(system)
    for message in params.get("messages") or ():
        content = message.get("content")
        if isinstance(content, str):
            turn = [content]
        else:
            turn = [b["text"] for b in content if b.get("type") == "text" and isinstance(b.get("text"), str)]
        texts.extend(turn)
        if message.get("role") == "user" and turn:
            prompt = " ".join(turn)
    return texts, prompt


def _dice(seed: int, custom_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}\0{custom_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def decide(request: Mapping[str, Any], *, seed: int, error_rate: float) -> Entry:
    """Turn one validated request into its :class:`Entry` (outcome fixed now, rendered at the end)."""
    custom_id: str = request["custom_id"]
    params: Mapping[str, Any] = request["params"]
    texts, prompt = _texts(params)
    outcome = SUCCEEDED
    error_type: str | None = None
    joined = "\n".join(texts)
    marker = MARKER_RE.search(joined) if _MARKER_HINT in joined else None
    if marker is not None:
        outcome = marker.group(1)
        if outcome == ERRORED:
            error_type = marker.group(2) or "api_error"
    elif error_rate > 0 and _dice(seed, custom_id) < error_rate:
        outcome, error_type = ERRORED, "api_error"
    snippet = " ".join(prompt[:240].split())[:60]  # only the head: splitting a long prompt whole is costly
    input_tokens = max(1, len(joined) // 4) + 4 * len(params.get("messages") or ())
    return Entry(custom_id, params["model"], outcome, error_type, snippet, input_tokens, params["max_tokens"])


class LineRenderer:
    """Renders result lines of one batch; reuses one encoder, as a batch can have 100,000 of them."""

    def __init__(self, *, batch_id: str, seed: int, result_bytes: int) -> None:
        self.batch_id = batch_id
        self.seed = seed
        self.result_bytes = result_bytes
        self._encode = msgspec.json.Encoder().encode

    def line(self, entry: Entry, outcome: str) -> bytes:
        """The JSONL line (with ``\\n``) of ``entry`` ending as ``outcome``."""
        if outcome == SUCCEEDED:
            return self._succeeded(entry)
        result: dict[str, Any] = {"type": outcome}
        if outcome == ERRORED:
            kind = entry.error_type or "api_error"
            message = _ERROR_MESSAGES.get(kind, f"{kind} (emulated).")
            result["error"] = {"type": "error", "error": {"type": kind, "message": message}}
        return self._encode({"custom_id": entry.custom_id, "result": result}) + b"\n"

    def _succeeded(self, entry: Entry) -> bytes:
        text = f"Emulated reply to: {entry.snippet}"
        message: dict[str, Any] = {
            "id": message_id(self.seed, self.batch_id, entry.custom_id),
            "type": "message",
            "role": "assistant",
            "model": entry.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": entry.input_tokens,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "service_tier": "batch",
            },
        }
        body = {"custom_id": entry.custom_id, "result": {"type": SUCCEEDED, "message": message}}
        # Pad the reply so the line reaches about result_bytes (one encode to measure, one to emit).
        missing = self.result_bytes - len(self._encode(body)) - 4
        if missing > 1:
            start = _WORD_STARTS[len(entry.custom_id) % 50]
            text = f"{text} {_cut_at_word(_FILLER[start:], missing - 1)}".rstrip()
        output_tokens = max(1, len(text) // 4)
        if output_tokens > entry.max_tokens:
            text = _cut_at_word(text, entry.max_tokens * 4)
            output_tokens = entry.max_tokens
            message["stop_reason"] = "max_tokens"
        message["content"][0]["text"] = text
        message["usage"]["output_tokens"] = output_tokens
        return self._encode(body) + b"\n"

"""What each request of a batch turns into, and the bytes of its result line.

A request's outcome depends only on the seed, its custom_id and its *attempt*: how many
batches of this emulator have carried that custom_id so far (1 for the first). So a test
that reruns gets the same results, and a request resubmitted after a transient error can
succeed, which is what retry rounds need. ``error_rate`` and ``expire_rate`` roll dice on
first attempts only, unless ``rates_every_attempt`` is set. A marker in the request's
message text forces an outcome regardless of the dice:

    [[emulator:succeeded]]              always succeeds
    [[emulator:errored]]                errored with api_error, on every attempt
    [[emulator:errored:TYPE]]           errored with TYPE (e.g. invalid_request_error, overloaded_error)
    [[emulator:canceled]]               canceled when the batch ends
    [[emulator:expired]]                expired when the batch ends, on every attempt
    [[emulator:errored-once:TYPE]]      errored (TYPE, default api_error) on attempt 1, then succeeds
    [[emulator:errored-times:N:TYPE]]   errored on attempts 1..N, then succeeds
    [[emulator:expired-once]]           expired on attempt 1, then succeeds
    [[emulator:expired-times:N]]        expired on attempts 1..N, then succeeds

Requests with a JSON schema output format get JSON answers (:mod:`.structured`, which
also has the markers that force a refusal, a cut or a schema violation).

Only what rendering needs is kept per request (custom_id, model, a prompt snippet,
token estimates), never the whole params: a 100,000-request batch stays small.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from airflow_provider_anthropix.emulator.ids import MessageIds
from airflow_provider_anthropix.emulator.structured import StructuredPlan, answer

SUCCEEDED = "succeeded"
ERRORED = "errored"
CANCELED = "canceled"
EXPIRED = "expired"

#: groups: 1 the outcome, 2 ``-once``/``-times`` (then 3 the count for -times), 4 the error type
MARKER_RE = re.compile(r"\[\[emulator:(succeeded|errored|canceled|expired)(-once|-times:(\d{1,6}))?(?::([a-z_]+))?\]\]")
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


class Entry(msgspec.Struct, gc=False):
    """The part of one batch request that its result needs.

    A struct without GC tracking: a batch holds 100,000 of them, and building that many
    tracked objects makes the collector run over and over during one create.
    """

    custom_id: str
    model: str
    outcome: str
    error_type: str | None
    snippet: str
    #: input tokens not read from or written to the prompt cache
    input_tokens: int
    max_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    #: the errored result's message, when not the default one of its type
    error_message: str | None = None
    #: how to answer a request with a JSON schema output format (None: a plain text reply)
    structured: StructuredPlan | None = None


def _dice(seed: int, custom_id: str, attempt: int, salt: str = "") -> float:
    # Attempt 1 rolls the same dice as before attempts existed, so seeded outcomes stay put.
    key = f"{seed}\0{custom_id}" if attempt == 1 else f"{seed}\0{custom_id}\0{attempt}"
    digest = hashlib.blake2b((key + salt).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class Dice:
    """How outcomes without a marker are drawn (from the emulator's config)."""

    seed: int = 0
    error_rate: float = 0.0
    expire_rate: float = 0.0
    rates_every_attempt: bool = False


def choose(joined: str, custom_id: str, attempt: int, dice: Dice) -> tuple[str, str | None]:
    """The outcome and error type of one request on its ``attempt``-th batch."""
    marker = MARKER_RE.search(joined) if _MARKER_HINT in joined else None
    if marker is not None:
        outcome, repeat, times, error_type = marker.groups()
        if repeat is not None:  # -once / -times:N: forced on the first attempts, then succeeds
            limit = 1 if repeat == "-once" else int(times)
            if attempt > limit:
                return SUCCEEDED, None
        if outcome == ERRORED:
            return ERRORED, error_type or "api_error"
        return outcome, None
    if attempt == 1 or dice.rates_every_attempt:
        if dice.error_rate > 0 and _dice(dice.seed, custom_id, attempt) < dice.error_rate:
            return ERRORED, "api_error"
        if dice.expire_rate > 0 and _dice(dice.seed, custom_id, attempt, "\0expire") < dice.expire_rate:
            return EXPIRED, None
    return SUCCEEDED, None


def make_entry(
    custom_id: str,
    model: str,
    max_tokens: int,
    joined: str,
    prompt: str,
    *,
    attempt: int,
    dice: Dice,
    input_tokens: int,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
    structured: StructuredPlan | None = None,
) -> Entry:
    """The :class:`Entry` of one request from its parts (outcome fixed now, rendered at the end)."""
    if _MARKER_HINT in joined or dice.error_rate or dice.expire_rate:
        outcome, error_type = choose(joined, custom_id, attempt, dice)
    else:  # no marker and no dice to roll: the common case of a large create
        outcome, error_type = SUCCEEDED, None
    return Entry(
        custom_id,
        model,
        outcome,
        error_type,
        _snippet(prompt),
        input_tokens,
        max_tokens,
        cache_creation_input_tokens,
        cache_read_input_tokens,
        structured=structured,
    )


def plain_entry(custom_id: str, model: str, max_tokens: int, prompt: str, input_tokens: int) -> Entry:
    """The :class:`Entry` :func:`make_entry` makes for a request whose whole text is one user
    ``prompt`` without a marker, when no dice are rolled (see :func:`.intake.plain_prompt`)."""
    return Entry(custom_id, model, SUCCEEDED, None, _snippet(prompt), input_tokens, max_tokens)


def _snippet(prompt: str) -> str:
    """The prompt's first 60 characters with runs of whitespace collapsed (what a reply echoes).

    Most prompts' heads have no whitespace to collapse: those are sliced, which is several
    times cheaper than splitting and joining (a 100,000-request create does this for each).
    """
    head = prompt[:60]
    if head.isprintable() and "  " not in head and not head.startswith(" "):
        return head if len(prompt) > 60 else head.rstrip()
    return " ".join(prompt[:240].split())[:60]  # only the head: splitting a long prompt whole is costly


class LineRenderer:
    """Renders result lines of one batch; reuses one encoder, as a batch can have 100,000 of them."""

    def __init__(self, *, batch_id: str, seed: int, result_bytes: int) -> None:
        self.batch_id = batch_id
        self.seed = seed
        self.result_bytes = result_bytes
        self._encode = msgspec.json.Encoder().encode
        self._message_id = MessageIds(seed, batch_id)

    def line(self, entry: Entry, outcome: str) -> bytes:
        """The JSONL line (with ``\\n``) of ``entry`` ending as ``outcome``."""
        out = bytearray()
        self.write(entry, outcome, out)
        return bytes(out)

    def write(self, entry: Entry, outcome: str, out: bytearray) -> None:
        """Append the line of :meth:`line` to ``out`` (a batch's results are one buffer).

        Not ``encode_into``: its buffer keeps growing by half again, and the slack stayed
        resident (50 MB for 100 MB of results) for as long as the batch is kept.
        """
        if outcome == SUCCEEDED:
            if entry.structured is None:
                out += self._encode(self._succeeded(entry))
            else:
                out += self._encode(self._structured(entry, entry.structured))
            out.append(10)
            return
        result: dict[str, Any] = {"type": outcome}
        if outcome == ERRORED:
            kind = entry.error_type or "api_error"
            message = entry.error_message or _ERROR_MESSAGES.get(kind, f"{kind} (emulated).")
            result["error"] = {"type": "error", "error": {"type": kind, "message": message}}
        out += self._encode({"custom_id": entry.custom_id, "result": result})
        out.append(10)

    def _message(
        self, entry: Entry, content: list[dict[str, Any]], stop_reason: str, output_tokens: int
    ) -> dict[str, Any]:
        """The succeeded result's Message."""
        return {
            "id": self._message_id(entry.custom_id),
            "type": "message",
            "role": "assistant",
            "model": entry.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": entry.input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": entry.cache_creation_input_tokens,
                "cache_read_input_tokens": entry.cache_read_input_tokens,
                "service_tier": "batch",
            },
        }

    def _structured(self, entry: Entry, plan: StructuredPlan) -> dict[str, Any]:
        """A JSON answer (or its refusal or cut), not padded: its size is the JSON's."""
        content, stop_reason, output_tokens = answer(plan, entry.snippet, entry.max_tokens)
        message = self._message(entry, content, stop_reason, output_tokens)
        return {"custom_id": entry.custom_id, "result": {"type": SUCCEEDED, "message": message}}

    def _succeeded(self, entry: Entry) -> dict[str, Any]:
        text = f"Emulated reply to: {entry.snippet}"
        message = self._message(entry, [{"type": "text", "text": text}], "end_turn", 0)
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
        return body

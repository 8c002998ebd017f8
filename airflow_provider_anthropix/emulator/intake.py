"""Decoding a create body fast: typed msgspec structs that keep only what results need.

A 100,000-request body is ~143 MB. Decoding it into dicts and running the shared
per-request checks of :mod:`airflow_provider_anthropix.api.validation` over them took
~1.8 s, which made the emulator the bottleneck of every create benchmark. Here the body
is decoded once into small structs (unknown params fields and non-text blocks are skipped
by the decoder without building Python objects), and the same rules are checked on them.

The messages of a refusal must be exactly the shared validator's, so this path never
writes one: whenever the typed decode or any check fails, :func:`fast_requests` returns
``None`` and the caller runs the generic path (dict decode + ``BatchChecker``) on the same
bytes, which produces the 400. Valid bodies, the common case, never pay for that. The
rule is one-sided on purpose: this path may send a valid body to the slow path (no harm),
but must never accept what the validator refuses; tests/integration/test_emulator_intake.py
checks that parity on a corpus of bad requests.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

from airflow_provider_anthropix.api.limits import CUSTOM_ID_RE

#: Versions whose rules reject sampling fields and some block placements (as the validator's).
_STRICT_VERSIONS = frozenset({"2026-10-21"})
_ROLES = frozenset({"user", "assistant"})


class _Object(Struct, gc=False):
    """Any JSON object, its content skipped (the validator only checks that it is an object)."""


class Block(Struct, gc=False):
    """A content block: only the fields rules or results look at."""

    type: str
    text: Any = None
    citations: Any = None
    cache_control: Any = None


class Message(Struct, gc=False):
    """One turn."""

    role: str
    content: str | list[Block]


class Params(Struct, gc=False):
    """The Messages body of one request; fields nobody checks are skipped by the decoder."""

    model: str
    max_tokens: int
    messages: list[Message]
    system: str | list[Block] | UnsetType = UNSET
    stream: Any = UNSET
    temperature: Any = UNSET
    top_p: Any = UNSET
    top_k: Any = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    metadata: _Object | UnsetType = UNSET
    tool_choice: _Object | UnsetType = UNSET
    thinking: _Object | UnsetType = UNSET
    tools: list[_Object] | UnsetType = UNSET


class Request(Struct, forbid_unknown_fields=True, gc=False):
    """One entry of ``requests``: exactly custom_id and params, like the validator wants."""

    custom_id: str
    params: Params


class Body(Struct, forbid_unknown_fields=True, gc=False):
    """The create body: only ``requests``."""

    requests: list[Request]


_decoder = msgspec.json.Decoder(Body)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_unit(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _params_ok(params: Params, strict: bool) -> bool:
    """The shared validator's rules for one params object, as a yes/no (see the module docstring)."""
    if not params.model or params.max_tokens < 1 or params.stream is not UNSET or not params.messages:
        return False
    if strict:
        if params.temperature is not UNSET or params.top_p is not UNSET or params.top_k is not UNSET:
            return False
    else:
        if params.top_k is not UNSET and (not _is_int(params.top_k) or params.top_k < 0):
            return False
        for value in (params.temperature, params.top_p):
            if value is not UNSET and not _is_unit(value):
                return False
    for m, message in enumerate(params.messages):
        role = message.role
        if role not in _ROLES or (m == 0 and role != "user"):
            return False
        content = message.content
        if strict and not isinstance(content, str):
            for block in content:
                if role == "assistant" and block.type == "document":
                    return False
                if role == "user" and block.type == "text" and block.citations:
                    return False
    return True


def fast_requests(body: bytes | bytearray, *, api_version: str, max_requests: int) -> list[Request] | None:
    """The requests of a valid create body, or None when the generic path must decide (and refuse).

    Never raises for bad input: malformed JSON, wrong shapes and rule violations all
    return None, so the one generic path owns every 400 message.
    """
    try:
        decoded = _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    requests = decoded.requests
    if not 1 <= len(requests) <= max_requests:
        return None
    strict = api_version in _STRICT_VERSIONS
    seen: set[str] = set()
    match = CUSTOM_ID_RE.match
    for request in requests:
        custom_id = request.custom_id
        if match(custom_id) is None or custom_id in seen or not _params_ok(request.params, strict):
            return None
        seen.add(custom_id)
    return requests


def texts_of(params: Params) -> tuple[str, str]:
    """All text the request carries (joined) and its last user turn's text (the prompt a reply echoes).

    The same text the generic path reads: a string system prompt, string contents and the
    ``text`` of text blocks.
    """
    texts: list[str] = []
    prompt = ""
    if isinstance(params.system, str):
        texts.append(params.system)
    for message in params.messages:
        content = message.content
        if isinstance(content, str):
            turn = [content]
        else:
            turn = [b.text for b in content if b.type == "text" and isinstance(b.text, str)]
        texts.extend(turn)
        if message.role == "user" and turn:
            prompt = " ".join(turn)
    return "\n".join(texts), prompt

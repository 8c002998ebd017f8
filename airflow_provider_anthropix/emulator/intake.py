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
but must never accept what the validator refuses; tests/unit/emulator/test_intake.py
checks that parity on a corpus of bad requests.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

from airflow_provider_anthropix.api.limits import CUSTOM_ID_RE
from airflow_provider_anthropix.api.validation import (
    output_config_problem,
    source_problem,
    thinking_problem,
    tool_choice_problem,
)

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
    #: an image's or document's source; other blocks' ``source`` (a search result's URL) too
    source: Any = None


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
    # Small objects the shared checks look into (forced tool, thinking budget, output format).
    tool_choice: Any = UNSET
    thinking: Any = UNSET
    output_config: Any = UNSET
    tools: list[dict[str, Any]] | UnsetType = UNSET  # decoded whole: they count as input tokens


class Request(Struct, forbid_unknown_fields=True, gc=False):
    """One entry of ``requests``: exactly custom_id and params, like the validator wants."""

    custom_id: str
    params: Params


class Body(Struct, forbid_unknown_fields=True, gc=False):
    """The create body: only ``requests``."""

    requests: list[Request]


_decoder = msgspec.json.Decoder(Body)
_encode = msgspec.json.Encoder().encode

#: Tokens added per message turn (role markers), as the count of a real prompt has some.
MESSAGE_OVERHEAD_TOKENS = 4
#: The shortest prefix the API caches (1,024 tokens; the docs say 2,048 for the smallest models).
MIN_CACHE_TOKENS = 1024
#: The smallest models need a longer prefix before the API caches it: 2,048 tokens.
MIN_CACHE_TOKENS_SMALL = 2048
_SMALL_MODELS = ("claude-3-haiku", "claude-3-5-haiku", "claude-haiku")


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
    if not _extras_ok(params):
        return False
    for m, message in enumerate(params.messages):
        role = message.role
        if role not in _ROLES or (m == 0 and role != "user"):
            return False
        content = message.content
        if isinstance(content, str):
            continue
        for block in content:
            kind = block.type
            if (kind == "image" or kind == "document") and source_problem(kind, block.source) is not None:
                return False
            if strict and role == "assistant" and kind == "document":
                return False
            if strict and role == "user" and kind == "text" and block.citations:
                return False
    return True


def _extras_ok(params: Params) -> bool:
    """The optional fields' rules, by the validator's own functions (so the two cannot drift)."""
    tools = params.tools
    if tools is not UNSET and not all(isinstance(t.get("name"), str) and t["name"] for t in tools):
        return False
    if params.tool_choice is not UNSET and tool_choice_problem(params.tool_choice, tools) is not None:
        return False
    if params.thinking is not UNSET and thinking_problem(params.thinking, params.max_tokens) is not None:
        return False
    return params.output_config is UNSET or output_config_problem(params.output_config) is None


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
    match = CUSTOM_ID_RE.fullmatch  # not .match: its $ would accept a trailing newline
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


def _tokens(chars: int, pieces: int, tool_chars: int, messages: int) -> int:
    """Input tokens of a prompt (prefix) from its size: ~4 characters a token, text pieces
    joined by one separator, plus a fixed overhead per message and the encoded tools."""
    return max(1, (chars + max(0, pieces - 1)) // 4) + MESSAGE_OVERHEAD_TOKENS * messages + tool_chars // 4


class PromptUsage(Struct, gc=False):
    """Input tokens of one request and its cacheable prefix (see :func:`prompt_usage`)."""

    total: int
    #: tokens up to and including the last block with ``cache_control`` (0: none, or too short)
    prefix: int = 0
    #: identifies the prefix (model and content): requests with equal keys share a cache entry
    prefix_key: bytes | None = None


def _items(params: Params) -> list[tuple[bytes, Any]]:
    """The prompt in the order the API caches it (tools, system, messages), as (tag, value) items."""
    items: list[tuple[bytes, Any]] = []
    if isinstance(params.tools, list):
        items += [(b"T", tool) for tool in params.tools]
    if isinstance(params.system, str):
        items.append((b"t", params.system))
    elif isinstance(params.system, list):
        items += [(b"b", b) for b in params.system]
    for message in params.messages:
        items.append((b"m", message.role))
        if isinstance(message.content, str):
            items.append((b"t", message.content))
        else:
            items += [(b"b", b) for b in message.content]
    return items


def _prefix_key(model: str, items: list[tuple[bytes, Any]]) -> bytes:
    digest = hashlib.blake2b(model.encode("utf-8", "surrogatepass"), digest_size=16)
    for tag, value in items:
        if tag == b"T":
            data = _encode(value)
        elif tag == b"b":
            data = _encode([value.type, value.text if isinstance(value.text, str) else None])
        else:
            data = value.encode("utf-8", "surrogatepass")
        digest.update(b"\0" + tag + len(data).to_bytes(8, "big") + data)
    return digest.digest()


def prompt_usage(params: Params) -> PromptUsage:
    """Input tokens as both ``count_tokens`` and a result's ``usage`` report them: one function.

    The prompt is walked in the order the API caches it (tools, system, messages). The
    prefix is everything up to and including the last block with ``cache_control``; it is
    cacheable from :data:`MIN_CACHE_TOKENS` tokens on. Text counts by its length; other
    blocks (images, documents) count as nothing: the emulator does not look into them.
    The prefix is hashed only when there is one (a create of 100,000 plain requests
    should not hash 140 MB of prompts).
    """
    chars = pieces = tool_chars = messages = 0
    mark: tuple[int, int, int, int] | None = None
    mark_items = 0
    system, tools = params.system, params.tools
    if not isinstance(system, list) and tools is UNSET:
        # The common case, no blocks outside the messages: count without building items.
        if isinstance(system, str):
            chars, pieces = len(system), 1
        for message in params.messages:
            messages += 1
            content = message.content
            if isinstance(content, str):
                chars += len(content)
                pieces += 1
                continue
            for b in content:
                if b.type == "text" and isinstance(b.text, str):
                    chars += len(b.text)
                    pieces += 1
                if b.cache_control:
                    mark = (chars, pieces, tool_chars, messages)
        if mark is None:
            return PromptUsage(_tokens(chars, pieces, tool_chars, messages))
        chars = pieces = tool_chars = messages = 0
        mark = None
    items = _items(params)
    for n, (tag, value) in enumerate(items, 1):
        flagged: Any = None
        if tag == b"T":
            tool_chars += len(_encode(value))
            flagged = value.get("cache_control")
        elif tag == b"t":
            chars += len(value)
            pieces += 1
        elif tag == b"m":
            messages += 1
        else:
            if value.type == "text" and isinstance(value.text, str):
                chars += len(value.text)
                pieces += 1
            flagged = value.cache_control
        if flagged:
            mark, mark_items = (chars, pieces, tool_chars, messages), n
    total = _tokens(chars, pieces, tool_chars, messages)
    if mark is None:
        return PromptUsage(total)
    prefix = _tokens(*mark)
    if prefix < (MIN_CACHE_TOKENS_SMALL if str(params.model).startswith(_SMALL_MODELS) else MIN_CACHE_TOKENS):
        return PromptUsage(total)
    return PromptUsage(total, prefix, _prefix_key(params.model, items[:mark_items]))


def summarize(params: Params) -> tuple[str, str, PromptUsage]:
    """:func:`texts_of` and :func:`prompt_usage` of one request in one walk where that is possible.

    A create of 100,000 plain requests (no tools, no system blocks, no ``cache_control``)
    spends most of its per-request time here, so that case is counted inline from the
    joined text (which equals what :func:`prompt_usage` would count); anything else takes
    the two general functions.
    """
    system = params.system
    if params.tools is UNSET and not isinstance(system, list):
        texts = [system] if isinstance(system, str) else []
        prompt = ""
        for message in params.messages:
            content = message.content
            if isinstance(content, str):
                texts.append(content)
                if message.role == "user":
                    prompt = content
                continue
            if any(b.cache_control for b in content):
                break
            turn = [b.text for b in content if b.type == "text" and isinstance(b.text, str)]
            texts.extend(turn)
            if message.role == "user" and turn:
                prompt = " ".join(turn)
        else:
            joined = "\n".join(texts)
            total = max(1, len(joined) // 4) + MESSAGE_OVERHEAD_TOKENS * len(params.messages)
            return joined, prompt, PromptUsage(total)
    joined, prompt = texts_of(params)
    return joined, prompt, prompt_usage(params)


def plain_prompt(params: Params) -> str | None:
    """The prompt of a request of the commonest shape, else None.

    That shape is one user turn of plain text with no system prompt, tools or output
    format, and no emulator marker: its summary is the text itself (no cached prefix,
    no structured answer, no forced outcome), so the caller can skip :func:`summarize`.
    """
    if params.system is not UNSET or params.tools is not UNSET or params.output_config is not UNSET:
        return None
    messages = params.messages
    if len(messages) != 1:
        return None
    content = messages[0].content
    if type(content) is not str or "[[emulator:" in content:
        return None
    return content


def params_of(params: dict[str, Any]) -> Params:
    """Validated params (a dict) as the struct the fast path builds, so both paths share one code."""
    return msgspec.convert(params, Params)

"""Answers to structured-output requests: JSON drawn from the request's own JSON Schema.

A request whose params carry ``output_config: {"format": {"type": "json_schema",
"schema": ...}}`` gets a succeeded answer whose text block is JSON valid against that
schema, as the API guarantees. Code that consumes such answers (parses them into tables,
checks them, resubmits the bad ones) needs answers that differ from request to request
yet repeat exactly on a rerun, so each answer is drawn (:class:`.draws.Draws`) from a seed
made of the emulator's seed, the custom_id, the attempt and the request itself. Each
distinct schema is compiled once (:mod:`.schema_values`), so a million answers to one
schema cost little more than their draws and one msgspec encode each. The JSON is compact
(``{"a":1}``, msgspec's form), and its strings are sized like a model's: a sentence or
two for a ``summary``-like property, a short phrase for a tag or a topic (:mod:`.wording`).

The generator knows what users write and what Pydantic's ``model_json_schema()`` emits:
``type`` (also a list such as ``["string", "null"]``), ``properties``, ``required``,
``additionalProperties``, ``items``/``prefixItems``, ``minItems``/``maxItems``/
``uniqueItems``, ``enum``, ``const``, ``anyOf``/``oneOf``/``allOf``, ``$ref`` into
``$defs``/``definitions``, numeric bounds, integer ``multipleOf``, string lengths and the
common ``format`` values. Anything else (``pattern``, ``not``, ``if``/``then``,
``contains``, ...) is ignored: the answer may then miss the schema, but a schema never
makes the emulator fail.

The API's guarantee has two exceptions a consumer must handle, and consumers must also
survive a model that slips; a marker in the request's text (the same text the outcome
markers of :mod:`.outcomes` are read from; the first marker found counts) forces each:

    [[emulator:refusal]]              stop_reason refusal, a short refusal text instead of JSON
    [[emulator:max-tokens]]           stop_reason max_tokens, the JSON cut in the middle
    [[emulator:schema-invalid]]       JSON that parses but breaks the schema
    [[emulator:schema-invalid-once]]  that on attempt 1 of the custom_id, valid JSON later

Each takes ``-once`` or ``-times:N`` (forced on attempts 1..N, a valid answer after),
which is what a retry round of a consumer is tested with.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import msgspec

from airflow_provider_anthropix.emulator.draws import Draws, draws_from
from airflow_provider_anthropix.emulator.schema_values import (
    CompiledSchema,
    Resolver,
    compile_schema,
    names,
    schema_key,
)
from airflow_provider_anthropix.emulator.schema_values import value_for_schema as _value_for_schema

REFUSAL_MARKER = "[[emulator:refusal]]"
MAX_TOKENS_MARKER = "[[emulator:max-tokens]]"
SCHEMA_INVALID_MARKER = "[[emulator:schema-invalid]]"
SCHEMA_INVALID_ONCE_MARKER = "[[emulator:schema-invalid-once]]"
#: groups: 1 the form (refusal, max-tokens, schema-invalid), 2 ``-once``/``-times:N``, 3 N
STRUCTURED_MARKER_RE = re.compile(r"\[\[emulator:(refusal|max-tokens|schema-invalid)(-once|-times:(\d{1,6}))?\]\]")

VALID = "valid"
REFUSAL = "refusal"
MAX_TOKENS = "max-tokens"
SCHEMA_INVALID = "schema-invalid"

REFUSAL_TEXT = "I'm sorry, but I can't help with that request. (emulated refusal)"

#: Values of a wrong JSON type, for answers that must break a schema, with the type each one is.
_WRONG_VALUES: tuple[tuple[str, Any], ...] = (
    ("string", "not the expected type (emulated)"),
    ("object", {"unexpected": True}),
    ("array", ["unexpected"]),
    ("boolean", True),
    ("number", 0.5),
    ("null", None),
)
_NOTHING: Any = object()
_OUTSIDE_ENUM = "not one of the enum's values (emulated)"
_encode = msgspec.json.encode


class StructuredPlan(msgspec.Struct, gc=False):
    """What a structured answer needs when its batch is rendered (at the end, not at create).

    :param schema: the request's JSON Schema (one object shared by every request that sent the same one)
    :param seed: the seed of the answer's draws: 64 bits of a hash of the emulator seed, custom_id, attempt and request
        (used as is, see :meth:`.draws.Draws.of_hash`)
    :param form: :data:`VALID`, :data:`REFUSAL`, :data:`MAX_TOKENS` or :data:`SCHEMA_INVALID`
    :param thinking: the request asked for thinking: a thinking block comes before the JSON
    :param compiled: the schema compiled (None: compiled, or found in the cache, when answered)
    """

    schema: Any
    seed: int
    form: str
    thinking: bool
    compiled: CompiledSchema | None = None


def plan_answer(
    output_config: Any, thinking: Any, joined: str, *, seed: int, custom_id: str, attempt: int
) -> StructuredPlan | None:
    """The plan of a structured answer, or None when the request asks for no JSON schema format."""
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    form = VALID
    marker = STRUCTURED_MARKER_RE.search(joined) if "[[emulator:" in joined else None
    if marker is not None:
        kind, repeat, times = marker.groups()
        limit = None if repeat is None else 1 if repeat == "-once" else int(times)
        if limit is None or attempt <= limit:
            form = kind
    schema = fmt.get("schema")
    key = schema_key(schema)
    compiled = compile_schema(schema, key)
    digest = hashlib.blake2b(f"{seed}\0{custom_id}\0{attempt}\0".encode(), digest_size=8)
    digest.update(joined.encode("utf-8", "surrogatepass"))
    # The schema as JSON bytes (repr when it is not JSON: safe for any string).
    digest.update(key if key is not None else repr(schema).encode("utf-8", "surrogatepass"))
    thinks = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    # The cached schema object, not the request's: 100,000 requests keep one copy until the batch ends.
    return StructuredPlan(compiled.schema, int.from_bytes(digest.digest(), "big"), form, thinks, compiled)


def answer(plan: StructuredPlan, snippet: str, max_tokens: int) -> tuple[list[dict[str, Any]], str, int]:
    """The content blocks, stop_reason and output_tokens of a structured answer.

    Tokens are counted like the other answers' (about 4 characters a token, thinking
    included); an answer longer than ``max_tokens`` is cut there, and a cut answer
    reports ``max_tokens`` output tokens, as the API does when it stops a reply.
    """
    blocks: list[dict[str, Any]] = []
    spent = 0
    if plan.thinking:
        thought = f"Emulated thinking: the answer to {snippet!r} must be JSON that follows the given schema."
        signature = base64.b64encode(hashlib.blake2b(thought.encode(), digest_size=32, salt=b"sig").digest())
        blocks.append({"type": "thinking", "thinking": thought, "signature": signature.decode()})
        spent = len(thought)
    stop_reason = "end_turn"
    if plan.form == REFUSAL:
        text, stop_reason = REFUSAL_TEXT, "refusal"
    else:
        compiled = plan.compiled or compile_schema(plan.schema)
        text = _text(compiled, Draws.of_hash(plan.seed), breaking=plan.form == SCHEMA_INVALID)
        if plan.form == MAX_TOKENS:
            text, stop_reason = cut_json(text), "max_tokens"
    output_tokens = max(1, (spent + len(text)) // 4)
    if output_tokens > max_tokens:
        text = text[: max(0, max_tokens * 4 - spent)]
        stop_reason = "max_tokens"
    if stop_reason == "max_tokens":
        output_tokens = max_tokens
    blocks.append({"type": "text", "text": text})
    return blocks, stop_reason, output_tokens


def json_text(schema: Any, rng: Any, *, breaking: bool = False) -> str:
    """JSON text of a value valid against ``schema`` (``breaking``: one that violates it).

    ``rng`` is a :class:`.draws.Draws`, a :class:`random.Random` or an int seed. Never
    raises: a schema the generator trips over (a shape nobody foresaw) gets ``{}``,
    because rendering a batch's results must not fail for one odd request.
    """
    return _text(compile_schema(schema), draws_from(rng), breaking=breaking)


def _text(compiled: CompiledSchema, draws: Draws, *, breaking: bool) -> str:
    """See :func:`json_text`; compact JSON, as msgspec writes it (non-ASCII kept as is)."""
    try:
        value = compiled.value(draws)
        if breaking:
            value = _Breaker(compiled.schema, draws).breaking(compiled.schema, value)
    except Exception:  # see json_text
        return "{}"
    try:
        return _encode(value).decode()
    except UnicodeEncodeError:  # a lone surrogate from the schema's enum: escape it instead
        return json.dumps(value, separators=(",", ":"))
    except Exception:  # a value msgspec cannot write (only schemas built in Python hold one)
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except Exception:  # see json_text
            return "{}"


def cut_json(text: str) -> str:
    """``text`` cut in the middle, so that it no longer parses (a bare number is cut further)."""
    cut = text[: len(text) // 2]
    while cut:
        try:
            json.loads(cut)
        except ValueError:
            return cut
        cut = cut[:-1]
    return cut


def value_for_schema(schema: Any, rng: Any) -> Any:
    """A JSON value valid against ``schema`` (best effort; see the module doc).

    ``rng`` is a :class:`.draws.Draws`, a :class:`random.Random` or an int seed.
    """
    return _value_for_schema(schema, draws_from(rng))


def value_breaking_schema(schema: Any, value: Any, rng: Any) -> Any:
    """``value`` changed so that it still parses but breaks ``schema``.

    One of: a required property left out, a property the schema forbids added, a property
    of the wrong type or outside its enum, or (when the schema is not an object) a value of
    the wrong type. A schema that accepts anything (``{}``) cannot be broken: ``value`` then.
    """
    return _Breaker(schema, draws_from(rng)).breaking(schema, value)


class _Breaker(Resolver):
    """Breaks one value of one root schema (only for the few answers a marker asks to break)."""

    def __init__(self, root: Any, draws: Draws) -> None:
        super().__init__(root)
        self.draws = draws

    def pick(self, options: list[Any]) -> Any:
        return options[self.draws.below(len(options))]

    def breaking(self, schema: Any, value: Any) -> Any:
        """See :func:`value_breaking_schema`; only changes that break the schema for sure are drawn."""
        resolved = self.resolve(schema)
        if not isinstance(resolved, dict):
            return value
        changes: list[tuple[str, str]] = []
        properties = resolved.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        if isinstance(value, dict) and "anyOf" not in resolved and "oneOf" not in resolved:
            changes += [("drop", name) for name in names(resolved.get("required")) if name in value]
            if resolved.get("additionalProperties") is False and "patternProperties" not in resolved:
                changes.append(("add", ""))
            changes += [
                ("retype", name) for name in properties if name in value and self.wrong_values(properties[name])
            ]
        if not changes:  # not an object: the whole value of another type
            wrong = self.wrong(resolved)
            return value if wrong is _NOTHING else wrong
        how, name = self.pick(changes)
        if how == "drop":
            return {k: v for k, v in value.items() if k != name}
        if how == "add":
            unused = next(f"unexpected_{n}" for n in range(len(properties) + 1) if f"unexpected_{n}" not in properties)
            return {**value, unused: "not in the schema (emulated)"}
        return {**value, name: self.wrong(properties[name])}

    def wrong(self, schema: Any) -> Any:
        """A value ``schema`` refuses (wrong type, or outside its enum), or ``_NOTHING`` when there is none."""
        options = self.wrong_values(schema)
        return self.pick(options) if options else _NOTHING

    def wrong_values(self, schema: Any) -> list[Any]:
        """Values ``schema`` refuses for sure: of a type it does not allow, or a string outside its enum."""
        allowed = self.types(schema)
        if allowed is None:
            return []
        options = [v for kind, v in _WRONG_VALUES if kind not in allowed]
        resolved = self.resolve(schema)
        enum = resolved.get("enum") if isinstance(resolved, dict) else None
        if isinstance(enum, list) and _OUTSIDE_ENUM not in enum:
            options.append(_OUTSIDE_ENUM)
        return options

"""Answers to structured-output requests: JSON drawn from the request's own JSON Schema.

A request whose params carry ``output_config: {"format": {"type": "json_schema",
"schema": ...}}`` gets a succeeded answer whose text block is JSON valid against that
schema, as the API guarantees. Code that consumes such answers (parses them into tables,
checks them, resubmits the bad ones) needs answers that differ from request to request
yet repeat exactly on a rerun, so each answer comes from a :class:`random.Random` seeded
by the emulator's seed, the custom_id, the attempt and the request itself.

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
import math
import random
import re
from typing import Any, TypeVar
from urllib.parse import unquote

import msgspec

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

_WORDS = (
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "iris", "juniper",
    "kelp", "lagoon", "meadow", "nectar", "orchid", "prairie", "quartz", "river", "saffron", "tundra",
    "umber", "valley", "willow", "yarrow", "zephyr",
)  # fmt: skip
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
#: From this depth on, optional parts are left out, so recursive schemas (trees) come to an end.
_SHALLOW = 4
#: Past this depth (or this many ``$ref`` hops) the generator gives up on a branch: null.
_GIVE_UP = 32
#: Steps one answer may take (values drawn, references followed); then the rest is null.
_BUDGET = 20_000
#: Longest string or array a ``minLength``/``minItems`` may ask for: answers stay small.
_MAX_LENGTH = 10_000
#: Values of a wrong JSON type, for answers that must break a schema, with the type each one is.
_WRONG_VALUES: tuple[tuple[str, Any], ...] = (
    ("string", "not the expected type (emulated)"),
    ("object", {"unexpected": True}),
    ("array", ["unexpected"]),
    ("boolean", True),
    ("number", 0.5),
    ("null", None),
)
_N = TypeVar("_N", int, float)
_NOTHING: Any = object()
_OUTSIDE_ENUM = "not one of the enum's values (emulated)"


class StructuredPlan(msgspec.Struct, gc=False):
    """What a structured answer needs when its batch is rendered (at the end, not at create).

    :param schema: the request's JSON Schema, as sent
    :param seed: the seed of the answer's random draws (emulator seed, custom_id, attempt, request)
    :param form: :data:`VALID`, :data:`REFUSAL`, :data:`MAX_TOKENS` or :data:`SCHEMA_INVALID`
    :param thinking: the request asked for thinking: a thinking block comes before the JSON
    """

    schema: Any
    seed: int
    form: str
    thinking: bool


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
    digest = hashlib.blake2b(f"{seed}\0{custom_id}\0{attempt}\0".encode(), digest_size=8)
    digest.update(joined.encode("utf-8", "surrogatepass"))
    digest.update(repr(fmt.get("schema")).encode("utf-8", "surrogatepass"))  # repr: safe for any string
    thinks = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    return StructuredPlan(fmt.get("schema"), int.from_bytes(digest.digest(), "big"), form, thinks)


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
        text = json_text(plan.schema, random.Random(plan.seed), breaking=plan.form == SCHEMA_INVALID)
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


def json_text(schema: Any, rng: random.Random, *, breaking: bool = False) -> str:
    """JSON text of a value valid against ``schema`` (``breaking``: one that violates it).

    Never raises: a schema the generator trips over (a shape nobody foresaw) gets ``{}``,
    because rendering a batch's results must not fail for one odd request.
    """
    try:
        value = value_for_schema(schema, rng)
        if breaking:
            value = value_breaking_schema(schema, value, rng)
        text = json.dumps(value, ensure_ascii=False)
        text.encode()  # a lone surrogate from the schema's enum: escape it instead
    except UnicodeEncodeError:
        text = json.dumps(value)
    except Exception:  # see the docstring
        text = "{}"
    return text


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


def value_for_schema(schema: Any, rng: random.Random) -> Any:
    """A JSON value valid against ``schema``, drawn with ``rng`` (best effort; see the module doc)."""
    return _Generator(schema, rng).value(schema, 0)


def value_breaking_schema(schema: Any, value: Any, rng: random.Random) -> Any:
    """``value`` changed so that it still parses but breaks ``schema``.

    One of: a required property left out, a property the schema forbids added, a property
    of the wrong type or outside its enum, or (when the schema is not an object) a value of
    the wrong type. A schema that accepts anything (``{}``) cannot be broken: ``value`` then.
    """
    return _Generator(schema, rng).breaking(schema, value)


class _Generator:
    """Draws values for one root schema (``$ref`` pointers resolve against the root)."""

    def __init__(self, root: Any, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        #: steps left (values drawn, references followed): a hostile schema cannot hang the renderer
        self.budget = _BUDGET

    # -- schemas ---------------------------------------------------------------------------
    def resolve(self, schema: Any, hops: int = 0) -> Any:
        """``schema`` with its ``$ref`` and ``allOf`` folded in (a ``$ref``'s siblings kept, as 2020-12 allows)."""
        while isinstance(schema, dict) and hops < _GIVE_UP and self.budget > 0:
            hops += 1
            self.budget -= 1
            if isinstance(schema.get("$ref"), str):
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                schema = _merge(self.pointer(schema["$ref"]), rest)
            elif isinstance(schema.get("allOf"), list):
                merged: Any = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    merged = _merge(merged, self.resolve(part, hops))
                schema = merged
            else:
                return schema
        return schema if not isinstance(schema, dict) else {}

    def pointer(self, ref: str) -> Any:
        """What a local ``$ref`` (``#``, ``#/$defs/Name``, any JSON pointer) points at; ``{}`` if nothing."""
        if not ref.startswith("#"):
            return {}  # another document: not fetched, anything goes
        node = self.root
        for raw in unquote(ref[1:]).split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return {}
        return node

    def types(self, schema: Any, depth: int = 0) -> set[str] | None:
        """The JSON types ``schema`` allows, when they can be told for sure (None: cannot)."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict) or depth > _GIVE_UP:
            return None
        kind = schema.get("type")
        if isinstance(kind, str):
            return {kind}
        if isinstance(kind, list) and kind and all(isinstance(k, str) for k in kind):
            return set(kind)
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return {_json_type(v) for v in schema["enum"]}
        if "const" in schema:
            return {_json_type(schema["const"])}
        branches = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(branches, list) and branches:
            found: set[str] = set()
            for branch in branches:
                more = self.types(branch, depth + 1)
                if more is None:
                    return None
                found |= more
            return found
        return None

    # -- values ----------------------------------------------------------------------------
    def value(self, schema: Any, depth: int) -> Any:
        """A value for ``schema`` at ``depth`` levels below the root."""
        schema = self.resolve(schema)
        self.budget -= 1
        if depth > _GIVE_UP or schema is False or self.budget < 0:
            return None
        if not isinstance(schema, dict):  # true, or junk where a schema belongs: anything goes
            return self.rng.choice(_WORDS)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                rest = {k: v for k, v in schema.items() if k != key}
                return self.value(_merge(rest, self.resolve(self.branch(branches, depth))), depth + 1)
        kind = self.kind(schema, depth)
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth)
        if kind == "string":
            return self.string(schema)
        if kind in ("integer", "number"):
            return self.number(schema, integer=kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        return None

    def branch(self, branches: list[Any], depth: int) -> Any:
        """One of ``anyOf``/``oneOf``'s branches; deep down, a null or plain one so recursion ends."""
        if depth >= _SHALLOW:
            for branch in branches:
                if self.types(branch) == {"null"}:
                    return branch
        return self.rng.choice(branches)

    def kind(self, schema: dict[str, Any], depth: int) -> str:
        """The JSON type to draw: the schema's ``type`` (one of a list), else guessed from its keywords."""
        declared = schema.get("type")
        if isinstance(declared, list):
            options = [t for t in declared if t in _TYPES]
            if options:
                return "null" if depth >= _SHALLOW and "null" in options else self.rng.choice(options)
        elif declared in _TYPES:
            return str(declared)
        if any(k in schema for k in ("properties", "required", "additionalProperties", "minProperties")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
            return "number"
        return "string"

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """Every required property, each optional one half the time (never deep down)."""
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = _names(schema.get("required"))
        extra = schema.get("additionalProperties", True)
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in required or (depth < _SHALLOW and self.rng.random() < 0.5):
                out[name] = self.value(sub, depth + 1)
        for name in required:
            if name not in out:
                out[name] = self.value(extra, depth + 1)
        if not properties and isinstance(extra, dict) and depth < _SHALLOW:  # a mapping: dict[str, X]
            for _ in range(self.rng.randint(0, 2)):
                out[f"{self.rng.choice(_WORDS)}_{len(out) + 1}"] = self.value(extra, depth + 1)
        wanted = min(_count(schema.get("minProperties"), 0), _MAX_LENGTH)
        for name, sub in properties.items():
            if len(out) >= wanted:
                break
            out.setdefault(name, self.value(sub, depth + 1))
        while len(out) < wanted and extra is not False:
            out[f"extra_{len(out) + 1}"] = self.value(extra, depth + 1)
        return out

    def array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        """Between ``minItems`` and a few more items (``maxItems`` permitting); unique when asked."""
        prefix, items = schema.get("prefixItems"), schema.get("items", True)
        if isinstance(items, list):  # drafts 4-7 wrote tuples as a list of items
            prefix, items = items, schema.get("additionalItems", True)
        prefix = prefix if isinstance(prefix, list) else []
        low = min(_count(schema.get("minItems"), 0), _MAX_LENGTH)
        high = _count(schema.get("maxItems"), low + 3)
        size = low if depth >= _SHALLOW else self.rng.randint(low, max(low, min(high, low + 3)))
        if items is False:
            size = min(size, len(prefix))
        unique = schema.get("uniqueItems") is True
        out: list[Any] = []
        seen: set[str] = set()
        for _ in range(4 * size + 8):  # a bounded number of draws, for unique items from few values
            if len(out) >= size:
                break
            item = self.value(prefix[len(out)] if len(out) < len(prefix) else items, depth + 1)
            if unique:
                key = json.dumps(item, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
            out.append(item)
        return out

    def string(self, schema: dict[str, Any]) -> str:
        """A few words, or a value of the schema's ``format``, fitted to ``minLength``/``maxLength``."""
        rng = self.rng
        fmt = schema.get("format")
        make = _FORMATS.get(fmt) if isinstance(fmt, str) else None
        text = make(rng) if make is not None else " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
        low = min(_count(schema.get("minLength"), 0), _MAX_LENGTH)
        if len(text) < low:
            text = " ".join([text] * (low // (len(text) + 1) + 1))
        high = _count(schema.get("maxLength"), None)
        return text[: max(low, high)] if high is not None else text

    def number(self, schema: dict[str, Any], *, integer: bool) -> int | float:
        """A number within the schema's bounds (exclusive ones too); an integer's ``multipleOf`` kept.

        One time in five an integer is one of the schema's bounds: the edges are where consumers' checks break.
        """
        low, low_open, high, high_open = _bounds(schema)
        if integer:
            lo = None if low is None else math.floor(low) + 1 if low_open else math.ceil(low)
            hi = None if high is None else math.ceil(high) - 1 if high_open else math.floor(high)
            lo, hi = _span(lo, hi, 100)
            step = schema.get("multipleOf")
            if isinstance(step, int) and not isinstance(step, bool) and step > 0:
                first, last = -(-lo // step), hi // step
                return self.rng.randint(first, last) * step if first <= last else lo
            if lo >= hi:
                return lo
            edges = [edge for edge, given in ((lo, low), (hi, high)) if given is not None]
            return self.rng.choice(edges) if edges and self.rng.random() < 0.2 else self.rng.randint(lo, hi)
        lo_f, hi_f = _span(low, high, 1000.0)
        if hi_f < lo_f:
            return lo_f
        drawn = round(self.rng.uniform(lo_f, hi_f), 2)
        if (drawn > lo_f or (not low_open and drawn == lo_f)) and (drawn < hi_f or (not high_open and drawn == hi_f)):
            return drawn
        return (lo_f + hi_f) / 2

    # -- breaking --------------------------------------------------------------------------
    def breaking(self, schema: Any, value: Any) -> Any:
        """See :func:`value_breaking_schema`; only changes that break the schema for sure are drawn."""
        resolved = self.resolve(schema)
        if not isinstance(resolved, dict):
            return value
        changes: list[tuple[str, str]] = []
        properties = resolved.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        if isinstance(value, dict) and "anyOf" not in resolved and "oneOf" not in resolved:
            changes += [("drop", name) for name in _names(resolved.get("required")) if name in value]
            if resolved.get("additionalProperties") is False and "patternProperties" not in resolved:
                changes.append(("add", ""))
            changes += [("retype", name) for name in properties if name in value and self.breakable(properties[name])]
        if not changes:  # not an object: the whole value of another type
            wrong = self.wrong(resolved)
            return value if wrong is _NOTHING else wrong
        how, name = self.rng.choice(changes)
        if how == "drop":
            return {k: v for k, v in value.items() if k != name}
        if how == "add":
            unused = next(f"unexpected_{n}" for n in range(len(properties) + 1) if f"unexpected_{n}" not in properties)
            return {**value, unused: "not in the schema (emulated)"}
        return {**value, name: self.wrong(properties[name])}

    def breakable(self, schema: Any) -> bool:
        """Whether :meth:`wrong` finds a value ``schema`` refuses."""
        return bool(self.wrong_values(schema))

    def wrong(self, schema: Any) -> Any:
        """A value ``schema`` refuses (wrong type, or outside its enum), or ``_NOTHING`` when there is none."""
        options = self.wrong_values(schema)
        return self.rng.choice(options) if options else _NOTHING

    def wrong_values(self, schema: Any) -> list[Any]:
        """Values ``schema`` refuses for sure: of a type it does not allow, or a string outside its enum."""
        allowed = self.types(schema)
        if allowed is None:
            return []
        options = [v for kind, v in _WRONG_VALUES if kind not in allowed]
        enum = self.resolve(schema).get("enum") if isinstance(self.resolve(schema), dict) else None
        if isinstance(enum, list) and _OUTSIDE_ENUM not in enum:
            options.append(_OUTSIDE_ENUM)
        return options


def _merge(base: Any, more: Any) -> Any:
    """Two schemas that must both hold, as one (properties joined, required united; ``more`` wins the rest)."""
    if base is False or more is False:
        return False
    if not isinstance(more, dict) or not more:
        return base
    if not isinstance(base, dict) or not base:
        return more
    merged = {**base, **more}
    if isinstance(base.get("properties"), dict) and isinstance(more.get("properties"), dict):
        merged["properties"] = {**base["properties"], **more["properties"]}
    if isinstance(base.get("required"), list) and isinstance(more.get("required"), list):
        merged["required"] = list(dict.fromkeys(base["required"] + more["required"]))
    return merged


def _names(value: Any) -> list[str]:
    return [n for n in value if isinstance(n, str)] if isinstance(value, list) else []


def _count(value: Any, default: Any) -> Any:
    """A non-negative integer keyword's value, or ``default`` when it is missing or malformed."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _bounds(schema: dict[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """Lower bound, whether it is exclusive, upper bound, whether it is exclusive (drafts 4 and 2020-12)."""
    low, high = _number(schema.get("minimum")), _number(schema.get("maximum"))
    low_open = schema.get("exclusiveMinimum") is True  # draft 4: a flag on minimum
    high_open = schema.get("exclusiveMaximum") is True
    x_low, x_high = _number(schema.get("exclusiveMinimum")), _number(schema.get("exclusiveMaximum"))
    if x_low is not None and (low is None or x_low >= low):
        low, low_open = x_low, True
    if x_high is not None and (high is None or x_high <= high):
        high, high_open = x_high, True
    return low, low_open, high, high_open


def _span(low: _N | None, high: _N | None, width: _N) -> tuple[_N, _N]:
    """Both ends of a range to draw from, a missing one ``width`` away from the other."""
    if low is None:
        return (width - width, width) if high is None else (high - width, high)
    return (low, low + width) if high is None else (low, high)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


_FORMATS: dict[str, Any] = {
    "date-time": lambda r: (
        f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z"
    ),
    "date": lambda r: f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z",
    "duration": lambda r: f"PT{r.randint(1, 3600)}S",
    "email": lambda r: f"{r.choice(_WORDS)}@example.com",
    "uri": lambda r: f"https://example.com/{r.choice(_WORDS)}",
    "hostname": lambda r: f"{r.choice(_WORDS)}.example.com",
    "ipv4": lambda r: f"192.0.2.{r.randint(1, 254)}",
    "ipv6": lambda r: f"2001:db8::{r.randint(1, 0xFFFF):x}",
    "uuid": _uuid,
}

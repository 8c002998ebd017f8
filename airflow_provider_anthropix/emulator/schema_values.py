"""JSON values drawn from a JSON Schema, with each distinct schema compiled once.

A table job sends the same schema with every one of its million requests. Walking the
schema for every answer (resolving ``$ref``, reading keywords, guessing types) cost most
of an answer's time, so :func:`compile_schema` turns a schema into a tree of small
closures, one per schema node, and keeps it in a cache keyed by the schema's JSON bytes.
An answer then only runs the closures with its own :class:`~.draws.Draws`.

Nodes are compiled the first time an answer reaches them, not up front: recursive
schemas (trees, ``anyOf`` branches that refer back to the root) only have the nodes
answers walk, and a hostile schema costs no more than the answers drawn from it. Compiling
never draws and every resolution has its own step budget, so a node compiles the same
whatever was drawn before: answers stay reproducible across processes and cache states.

What the generator understands, and what it ignores, is listed in :mod:`.structured`.
Strings are sized as a model writes them: prose (a sentence or two) for properties
whose names say so (``summary``, ``reason``, ...), a short noun phrase otherwise (see
:mod:`.wording`); arrays without ``minItems`` get one to three items.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote

import msgspec

from airflow_provider_anthropix.api.json_types import json_type
from airflow_provider_anthropix.emulator.draws import Draws
from airflow_provider_anthropix.emulator.wording import is_prose, phrase, prose

WORDS = (
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "iris", "juniper",
    "kelp", "lagoon", "meadow", "nectar", "orchid", "prairie", "quartz", "river", "saffron", "tundra",
    "umber", "valley", "willow", "yarrow", "zephyr",
)  # fmt: skip
TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
#: From this depth on, optional parts are left out, so recursive schemas (trees) come to an end.
SHALLOW = 4
#: Past this depth (or this many ``$ref`` hops) the generator gives up on a branch: null.
GIVE_UP = 32
#: Steps one answer may take (values drawn), and one resolution of ``$ref``/``allOf`` too.
BUDGET = 20_000
#: Longest string or array a ``minLength``/``minItems`` may ask for: answers stay small.
MAX_LENGTH = 10_000
#: Compiled schemas kept; the oldest is dropped past this (a job has one or a few).
_CACHE_SIZE = 256
#: Nodes one compiled schema keeps; past this (only hostile schemas get there) new ones are rebuilt per use.
_MAX_NODES = 20_000

_N = TypeVar("_N", int, float)
#: A compiled node: (draws, depth) -> value; ``draws.budget`` counts the steps the answer has left.
Node = Callable[[Draws, int], Any]


class Resolver:
    """``$ref`` pointers, ``allOf`` folding and type inference against one root schema (no draws)."""

    def __init__(self, root: Any) -> None:
        self.root = root

    def resolve(self, schema: Any) -> Any:
        """``schema`` with its ``$ref`` and ``allOf`` folded in (a ``$ref``'s siblings kept, as 2020-12 allows)."""
        return self._resolve(schema, 0, [BUDGET])

    def _resolve(self, schema: Any, hops: int, budget: list[int]) -> Any:
        while isinstance(schema, dict) and hops < GIVE_UP and budget[0] > 0:
            hops += 1
            budget[0] -= 1
            if isinstance(schema.get("$ref"), str):
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                schema = merge(self.pointer(schema["$ref"]), rest)
            elif isinstance(schema.get("allOf"), list):
                merged: Any = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    merged = merge(merged, self._resolve(part, hops, budget))
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
        if not isinstance(schema, dict) or depth > GIVE_UP:
            return None
        kind = schema.get("type")
        if isinstance(kind, str):
            return {kind}
        if isinstance(kind, list) and kind and all(isinstance(k, str) for k in kind):
            return set(kind)
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return {json_type(v) for v in schema["enum"]}
        if "const" in schema:
            return {json_type(schema["const"])}
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


class CompiledSchema:
    """One root schema as closures; :meth:`value` draws a value valid against it (best effort)."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.resolver = Resolver(schema)
        self._nodes = 0
        self._root: list[Node | None] = [None]

    def value(self, draws: Draws) -> Any:
        """A value for the root schema, drawn with ``draws``."""
        draws.budget = BUDGET  # a hostile schema cannot hang the renderer
        return self._child(self._root, 0, self.schema, False)(draws, 0)

    # -- building --------------------------------------------------------------------------
    def _child(self, slots: list[Node | None], i: int, schema: Any, wordy: bool) -> Node:
        """The node in ``slots[i]``, compiled from ``schema`` on first use (kept while under the cap)."""
        node = slots[i]
        if node is None:
            node = self._build(schema, wordy)
            if self._nodes < _MAX_NODES:
                self._nodes += 1
                slots[i] = node
        return node

    def _build(self, raw: Any, wordy: bool) -> Node:
        """The node of one schema; ``wordy``: strings here are prose (see :mod:`.wording`)."""
        schema = self.resolver.resolve(raw)
        if schema is False:
            return _null_node
        if not isinstance(schema, dict):  # true, or junk where a schema belongs: anything goes
            return _word_node
        if "const" in schema:
            return _constant(schema["const"])
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return _choice(tuple(enum))
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                return self._branches(schema, key, branches, wordy)
        declared = schema.get("type")
        if isinstance(declared, list):
            options = [t for t in declared if t in TYPES]
            if options:
                return self._kinds(schema, options, wordy)
        elif declared in TYPES:
            return self._kind(schema, str(declared), wordy)
        return self._kind(schema, _guess_kind(schema), wordy)

    def _branches(self, schema: dict[str, Any], key: str, branches: list[Any], wordy: bool) -> Node:
        """``anyOf``/``oneOf``: one branch (merged with the rest of the schema); deep down, a null one if any."""
        rest = {k: v for k, v in schema.items() if k != key}
        nulls = [i for i, branch in enumerate(branches) if self.resolver.types(branch) == {"null"}]
        deep = nulls[0] if nulls else None
        count = len(branches)
        slots: list[Node | None] = [None] * count
        resolve = self.resolver.resolve

        def node(d: Draws, depth: int) -> Any:
            d.budget -= 1
            if depth >= GIVE_UP or d.budget < 0:
                return None
            i = deep if deep is not None and depth >= SHALLOW else d.below(count)
            merged = slots[i] or self._child(slots, i, merge(rest, resolve(branches[i])), wordy)
            return merged(d, depth + 1)

        return node

    def _kinds(self, schema: dict[str, Any], options: list[str], wordy: bool) -> Node:
        """A ``type`` list: one of its types per value (null deep down, when allowed)."""
        nodes = [self._kind(schema, kind, wordy) for kind in options]
        deep = nodes[options.index("null")] if "null" in options else None
        count = len(nodes)

        def node(d: Draws, depth: int) -> Any:
            if deep is not None and depth >= SHALLOW:
                return deep(d, depth)
            return nodes[d.below(count)](d, depth)

        return node

    def _kind(self, schema: dict[str, Any], kind: str, wordy: bool) -> Node:
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            return self._array(schema, wordy)
        if kind == "string":
            return _string(schema, wordy)
        if kind in ("integer", "number"):
            return _integer(schema) if kind == "integer" else _number(schema)
        if kind == "boolean":
            return _boolean_node
        return _null_node

    def _object(self, schema: dict[str, Any]) -> Node:
        """Every required property, each optional one half the time (never deep down)."""
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = set(names(schema.get("required")))
        extra = schema.get("additionalProperties", True)
        fields = [(i, name, sub, name in required, is_prose(name if isinstance(name, str) else None))
                  for i, (name, sub) in enumerate(properties.items())]  # fmt: skip
        slots: list[Node | None] = [None] * len(fields)
        missing = [name for name in names(schema.get("required")) if name not in properties]
        missing = list(dict.fromkeys(missing))
        extra_slot: list[Node | None] = [None]
        mapping = not properties and isinstance(extra, dict)
        wanted = min(count_of(schema.get("minProperties"), 0), MAX_LENGTH)
        child = self._child

        charge = 1 + len(fields) + len(missing) + wanted + (2 if mapping else 0)

        def node(d: Draws, depth: int) -> Any:
            d.budget -= charge  # paid up front for the children: leaves do not count themselves
            if depth >= GIVE_UP or d.budget < 0:
                return None
            below = d.below
            deeper = depth + 1
            out: dict[str, Any] = {}
            for i, name, sub, needed, wordy in fields:
                if needed or (depth < SHALLOW and below(2) == 0):
                    out[name] = (slots[i] or child(slots, i, sub, wordy))(d, deeper)
            if missing or mapping or wanted:
                more = extra_slot[0] or child(extra_slot, 0, extra, False)
                for name in missing:
                    out[name] = more(d, depth + 1)
                if mapping and depth < SHALLOW:  # a mapping: dict[str, X]
                    for _ in range(below(3)):
                        out[f"{WORDS[below(len(WORDS))]}_{len(out) + 1}"] = more(d, depth + 1)
                for i, name, sub, _, wordy in fields:
                    if len(out) >= wanted:
                        break
                    if name not in out:
                        out[name] = (slots[i] or child(slots, i, sub, wordy))(d, depth + 1)
                while len(out) < wanted and extra is not False:
                    out[f"extra_{len(out) + 1}"] = more(d, depth + 1)
            return out

        return node

    def _array(self, schema: dict[str, Any], wordy: bool) -> Node:
        """One to three items when ``minItems`` allows none, else ``minItems`` to a few more (``maxItems``
        permitting); unique when asked, else a repeated short string is drawn once more (a model
        rarely repeats a topic)."""
        prefix, items = schema.get("prefixItems"), schema.get("items", True)
        if isinstance(items, list):  # drafts 4-7 wrote tuples as a list of items
            prefix, items = items, schema.get("additionalItems", True)
        prefix = prefix if isinstance(prefix, list) else []
        low = min(count_of(schema.get("minItems"), 0), MAX_LENGTH)
        high = count_of(schema.get("maxItems"), low + 3)
        top = max(low, min(high, low + 3))
        bottom = low if low or top == 0 else 1
        cap = len(prefix) if items is False else None
        unique = schema.get("uniqueItems") is True
        simple = not unique and not prefix
        slots: list[Node | None] = [None] * (len(prefix) + 1)
        schemas = [*prefix, items]
        child = self._child

        def node(d: Draws, depth: int) -> Any:
            if depth >= GIVE_UP:
                return None
            size = low if depth >= SHALLOW else bottom + d.below(top - bottom + 1)
            if cap is not None:
                size = min(size, cap)
            d.budget -= 1 + size  # paid up front for the items: leaves do not count themselves
            if d.budget < 0:
                return None
            if simple:  # the common case: neither unique nor a tuple
                item_node = slots[0] or child(slots, 0, items, wordy)
                deeper = depth + 1
                out = []
                for _ in range(size):
                    item = item_node(d, deeper)
                    if size <= 8 and type(item) is str and item in out:  # one more try, then keep it
                        item = item_node(d, deeper)
                    out.append(item)
                return out
            if not unique:
                return [
                    (slots[i] or child(slots, i, schemas[i], wordy))(d, depth + 1)
                    for i in (min(n, len(prefix)) for n in range(size))
                ]
            out = []
            seen: set[Any] = set()
            for _ in range(4 * size + 8):  # a bounded number of draws, for unique items from few values
                if len(out) >= size:
                    break
                i = min(len(out), len(prefix))
                item = (slots[i] or child(slots, i, schemas[i], wordy))(d, depth + 1)
                key = item if type(item) is str else ("json", json.dumps(item, sort_keys=True))
                if key not in seen:
                    seen.add(key)
                    out.append(item)
            return out

        return node


# -- leaves ------------------------------------------------------------------------------------
def _null_node(d: Draws, depth: int) -> Any:
    return None


def _word_node(d: Draws, depth: int) -> Any:
    return WORDS[d.below(len(WORDS))]


def _boolean_node(d: Draws, depth: int) -> Any:
    return d.below(2) == 0


def _constant(value: Any) -> Node:
    def node(d: Draws, depth: int) -> Any:
        return value

    return node


def _choice(options: tuple[Any, ...]) -> Node:
    count = len(options)

    def node(d: Draws, depth: int) -> Any:
        return options[d.below(count)]

    return node


def _string(schema: dict[str, Any], wordy: bool) -> Node:
    """Prose or a phrase (or a value of the schema's ``format``), fitted to ``minLength``/``maxLength``."""
    fmt = schema.get("format")
    make = FORMATS.get(fmt) if isinstance(fmt, str) else None
    low = min(count_of(schema.get("minLength"), 0), MAX_LENGTH)
    high = count_of(schema.get("maxLength"), None)
    limit = None if high is None else max(low, high)
    words = make is None and wordy
    if make is None and not wordy and not low and high is None:
        return phrase  # the commonest string: a phrase, drawn without another call in between

    def node(d: Draws, depth: int) -> Any:
        if words:
            return prose(d, low, limit)
        text = make(d) if make is not None else phrase(d)
        if len(text) < low:
            text = " ".join([text] * (low // (len(text) + 1) + 1))
        return text[:limit] if limit is not None else text

    return node


def _integer(schema: dict[str, Any]) -> Node:
    """An integer within the bounds, a ``multipleOf`` kept; one time in five one of the given bounds
    (the edges are where consumers' checks break)."""
    low, low_open, high, high_open = bounds(schema)
    lo = None if low is None else math.floor(low) + 1 if low_open else math.ceil(low)
    hi = None if high is None else math.ceil(high) - 1 if high_open else math.floor(high)
    lo, hi = span(lo, hi, 100)
    raw_step = schema.get("multipleOf")
    step = raw_step if isinstance(raw_step, int) and not isinstance(raw_step, bool) and raw_step > 0 else 0
    stepped = step > 0
    edges = tuple(edge for edge, given in ((lo, low), (hi, high)) if given is not None)
    first, last = (-(-lo // step), hi // step) if stepped else (0, 0)
    spread = hi - lo + 1
    fixed: int | None = None
    if (stepped and first > last) or (not stepped and lo >= hi):
        fixed = lo

    def node(d: Draws, depth: int) -> Any:
        if fixed is not None:
            return fixed
        if stepped:
            return (first + d.below(last - first + 1)) * step
        if edges:  # one draw: which fifth (the first: an edge) and where
            fifth, at = divmod(d.below(5 * spread), spread)
            return edges[at % len(edges)] if fifth == 0 else lo + at
        return lo + d.below(spread)

    return node


def _number(schema: dict[str, Any]) -> Node:
    """A number within the bounds (exclusive ones too), with two decimals."""
    low, low_open, high, high_open = bounds(schema)
    lo, hi = span(low, high, 1000.0)

    def node(d: Draws, depth: int) -> Any:
        if hi < lo:
            return lo
        drawn = round(lo + (hi - lo) * d.unit(), 2)
        if (drawn > lo or (not low_open and drawn == lo)) and (drawn < hi or (not high_open and drawn == hi)):
            return drawn
        return (lo + hi) / 2

    return node


def _guess_kind(schema: dict[str, Any]) -> str:
    """The JSON type a schema without ``type`` describes, guessed from its keywords."""
    if any(k in schema for k in ("properties", "required", "additionalProperties", "minProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    return "string"


# -- helpers shared with the breaking of answers -------------------------------------------------
def merge(base: Any, more: Any) -> Any:
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


def names(value: Any) -> list[str]:
    """The strings of a ``required`` list (anything else in it, or a list that is not one, ignored)."""
    return [n for n in value if isinstance(n, str)] if isinstance(value, list) else []


def count_of(value: Any, default: Any) -> Any:
    """A non-negative integer keyword's value, or ``default`` when it is missing or malformed."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def bounds(schema: dict[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """Lower bound, whether it is exclusive, upper bound, whether it is exclusive (drafts 4 and 2020-12)."""
    low, high = _finite(schema.get("minimum")), _finite(schema.get("maximum"))
    low_open = schema.get("exclusiveMinimum") is True  # draft 4: a flag on minimum
    high_open = schema.get("exclusiveMaximum") is True
    x_low, x_high = _finite(schema.get("exclusiveMinimum")), _finite(schema.get("exclusiveMaximum"))
    if x_low is not None and (low is None or x_low >= low):
        low, low_open = x_low, True
    if x_high is not None and (high is None or x_high <= high):
        high, high_open = x_high, True
    return low, low_open, high, high_open


def span(low: _N | None, high: _N | None, width: _N) -> tuple[_N, _N]:
    """Both ends of a range to draw from, a missing one ``width`` away from the other."""
    if low is None:
        return (width - width, width) if high is None else (high - width, high)
    return (low, low + width) if high is None else (low, high)


def _uuid(d: Draws) -> str:
    h = f"{d.below(1 << 128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _between(d: Draws, low: int, high: int) -> int:
    return low + d.below(high - low + 1)


FORMATS: dict[str, Callable[[Draws], str]] = {
    "date-time": lambda d: (
        f"2025-{_between(d, 1, 12):02d}-{_between(d, 1, 28):02d}T{d.below(24):02d}:{d.below(60):02d}:00Z"
    ),
    "date": lambda d: f"2025-{_between(d, 1, 12):02d}-{_between(d, 1, 28):02d}",
    "time": lambda d: f"{d.below(24):02d}:{d.below(60):02d}:00Z",
    "duration": lambda d: f"PT{_between(d, 1, 3600)}S",
    "email": lambda d: f"{WORDS[d.below(len(WORDS))]}@example.com",
    "uri": lambda d: f"https://example.com/{WORDS[d.below(len(WORDS))]}",
    "hostname": lambda d: f"{WORDS[d.below(len(WORDS))]}.example.com",
    "ipv4": lambda d: f"192.0.2.{_between(d, 1, 254)}",
    "ipv6": lambda d: f"2001:db8::{_between(d, 1, 0xFFFF):x}",
    "uuid": _uuid,
}

# -- the cache -------------------------------------------------------------------------------------
_cache: dict[bytes, CompiledSchema] = {}
_cache_lock = threading.Lock()
_encode = msgspec.json.encode


def schema_key(schema: Any) -> bytes | None:
    """The schema's JSON bytes, properties in their order (which is the answers' order); None if not JSON.

    (msgspec writes a float infinity or NaN as ``null``: only schemas built in Python hold one,
    and the generator reads a non-finite bound as no bound, like ``null``.)
    """
    try:
        return _encode(schema)
    except (TypeError, ValueError, OverflowError):  # a lone surrogate, a Python-only value: not cached
        return None


def compile_schema(schema: Any, key: bytes | None = None) -> CompiledSchema:
    """The compiled form of ``schema``, shared by every equal schema (``key``: its :func:`schema_key`)."""
    key = schema_key(schema) if key is None else key
    if key is None:
        return CompiledSchema(schema)
    found = _cache.get(key)
    if found is not None:
        return found
    with _cache_lock:
        found = _cache.get(key)
        if found is None:
            if len(_cache) >= _CACHE_SIZE:
                del _cache[next(iter(_cache))]
            found = _cache[key] = CompiledSchema(schema)
    return found


def value_for_schema(schema: Any, draws: Draws) -> Any:
    """A JSON value valid against ``schema`` (best effort; see :mod:`.structured`)."""
    return compile_schema(schema).value(draws)

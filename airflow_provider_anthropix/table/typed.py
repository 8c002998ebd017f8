"""A fast path for answers that hold to the schema: one typed msgspec decode instead of a decode and a walk.

Checking a million answers with the compiled checker (``table/schema.py``) costs a Python
call per value, about 10 us an answer, more than the rest of the export together. Most
schemas users give (and all that Pydantic models of plain fields emit) map onto msgspec types
that check the same things while decoding, in C: ``string`` (``minLength``/``maxLength``),
``integer`` and ``number`` (``minimum``/``maximum``), ``boolean``, string ``enum``, ``array``
(``items``, ``minItems``/``maxItems``), ``object`` with ``properties``, ``required`` and
``additionalProperties: false``.

The fast path only ever *accepts*: an answer it refuses goes to the decode and the checker
as before, which say why (or find it valid after all, e.g. ``3.0`` for an integer). So it
must never accept an answer the checker refuses, and the values it gives must be the ones
the plain decode gives. A schema using anything the checker checks and these types cannot say
the same way (``const``, ``anyOf``/``oneOf``, ``$ref``, a list of types, a non-string enum, a
property required but not described, an object without properties...) gets no fast path at
all. Keywords the checker ignores are ignored here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import msgspec

#: Keywords the checker acts on that the types below cannot express: a schema with any of them is left to the checker.
_UNSUPPORTED = ("const", "$ref")
#: Every keyword the checker acts on (``additionalProperties`` only when false).
_CHECKED = (
    "type", "enum", "const", "minimum", "maximum", "minLength", "maxLength", "properties", "required",
    "additionalProperties", "items", "minItems", "maxItems", "anyOf", "oneOf", "$ref",
)  # fmt: skip


class _NoFastPath(Exception):
    """The schema uses something the typed decode cannot check exactly as the checker does."""


def typed_values(schema: Mapping[str, Any]) -> Callable[[str], list[Any]] | None:
    """A function from an answer's text to its top-level column values, raising ``msgspec.DecodeError`` for any
    answer it does not accept; or None when the schema cannot be checked this way."""
    try:
        root, nested = _struct(schema, "Answer")
    except (_NoFastPath, TypeError, ValueError):
        return None
    decode = msgspec.json.Decoder(root).decode
    astuple = msgspec.structs.astuple
    to_builtins = msgspec.to_builtins
    unset = msgspec.UNSET
    if not nested and not any(f.default is unset for f in msgspec.structs.fields(root)):
        return lambda text: list(astuple(decode(text)))

    def values(text: str) -> list[Any]:
        out: list[Any] = []
        for value in astuple(decode(text)):
            if value is unset:
                out.append(None)
            elif nested and isinstance(value, (msgspec.Struct, list)):
                out.append(to_builtins(value))  # a struct column takes dicts, as the plain decode gives
            else:
                out.append(value)
        return out

    return values


def _struct(node: Mapping[str, Any], name: str) -> tuple[Any, bool]:
    """The Struct type of an object node, and whether it holds other Structs."""
    _supported(node)
    if node.get("type") != "object":
        raise _NoFastPath
    properties = node.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        raise _NoFastPath  # a free-form object is kept whole (as JSON text): leave it to the plain decode
    required = node.get("required", [])
    if not isinstance(required, list) or any(not isinstance(r, str) or r not in properties for r in required):
        raise _NoFastPath
    fields: list[tuple[str, Any, Any]] = []
    nested = False
    for i, (key, sub) in enumerate(properties.items()):
        if not isinstance(key, str) or not isinstance(sub, Mapping):
            raise _NoFastPath
        kind, holds = _type(sub, f"{name}_{i}")
        nested = nested or holds
        if key in required:
            fields.append((f"f{i}", kind, msgspec.field(name=key)))
        else:
            fields.append((f"f{i}", kind | msgspec.UnsetType, msgspec.field(default=msgspec.UNSET, name=key)))
    closed = node.get("additionalProperties") is False
    return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=closed, gc=False), nested


def _supported(node: Mapping[str, Any]) -> None:
    if any(key in node for key in _UNSUPPORTED):
        raise _NoFastPath
    if ("anyOf" in node or "oneOf" in node) and not _nullable(node):
        raise _NoFastPath


def _nullable(node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """X of ``anyOf: [X, {"type": "null"}]`` (what Pydantic emits for ``X | None``), when that is all the node checks."""
    checked = [
        key for key in _CHECKED if key in node and not (key == "additionalProperties" and node[key] is not False)
    ]
    if len(checked) != 1 or checked[0] not in ("anyOf", "oneOf"):
        return None
    options = node[checked[0]]
    if not isinstance(options, list) or len(options) != 2 or not all(isinstance(o, Mapping) for o in options):
        return None
    nulls = [o for o in options if dict(o) == {"type": "null"}]
    if len(nulls) != 1:
        return None
    inner: Mapping[str, Any] = next(o for o in options if o is not nulls[0])
    return inner


def _type(node: Mapping[str, Any], name: str) -> tuple[Any, bool]:
    """The msgspec type of one schema node (and whether it holds a Struct)."""
    _supported(node)
    inner = _nullable(node)
    if inner is not None:
        kind, holds = _type(inner, name)
        return kind | None, holds
    kind = node.get("type")
    enum = node.get("enum")
    if enum is not None:
        if kind not in (None, "string") or not isinstance(enum, list) or not enum:
            raise _NoFastPath
        if not all(type(v) is str for v in enum) or "minLength" in node or "maxLength" in node:
            raise _NoFastPath
        return Literal[tuple(enum)], False
    if kind == "string":
        return _annotated(str, min_length=_count(node, "minLength"), max_length=_count(node, "maxLength")), False
    low, high = _bound(node, "minimum"), _bound(node, "maximum")
    # An integer is >= 1.5 when it is >= 2: integer bounds for the integer types (msgspec takes no others).
    int_low = math.ceil(low) if low is not None else None
    int_high = math.floor(high) if high is not None else None
    if kind == "integer":
        return _annotated(int, ge=int_low, le=int_high), False
    if kind == "number":
        return _annotated(int, ge=int_low, le=int_high) | _annotated(float, ge=low, le=high), False
    if kind == "boolean":
        return bool, False
    if kind == "array":
        items = node.get("items")
        if items is None:
            item: Any = Any
            holds = False
        elif isinstance(items, Mapping):
            item, holds = _type(items, name)
        else:
            raise _NoFastPath
        return _annotated(list[item], min_length=_count(node, "minItems"), max_length=_count(node, "maxItems")), holds
    if kind == "object":
        return _struct(node, name)[0], True
    raise _NoFastPath  # no type, a list of types, null


def _count(node: Mapping[str, Any], key: str) -> int | None:
    value = node.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise _NoFastPath
    return value


def _bound(node: Mapping[str, Any], key: str) -> int | float | None:
    value = node.get(key)
    if value is None:
        return None
    if type(value) not in (int, float):
        raise _NoFastPath
    return value  # type: ignore[no-any-return]


def _annotated(kind: Any, **limits: Any) -> Any:
    given = {key: value for key, value in limits.items() if value is not None}
    if not given:
        return kind
    return Annotated[kind, msgspec.Meta(**given)]

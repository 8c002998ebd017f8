"""The answer schema: what is sent as ``output_config.format``, how an answer is checked, and its Arrow columns.

A schema is a JSON Schema dict or a Pydantic model class (its ``model_json_schema()``). The
checker is compiled once from the schema into small closures, because a million answers are
checked per job and a general JSON Schema library costs tens of microseconds each. It covers
what structured outputs use: types (and type lists), ``enum``, ``const``, ``required``,
``properties``, ``additionalProperties: false``, ``items``, ``minItems``/``maxItems``,
``minimum``/``maximum``, ``minLength``/``maxLength``, ``anyOf``/``oneOf`` and ``$ref`` into
``$defs``. Keywords it does not know are not checked (the API enforced them when it answered).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.json_types import json_type

if TYPE_CHECKING:
    import pyarrow

#: Checks one value; returns None when it is valid, else what is wrong and where (``$.topics[2]``).
Checker = Callable[[Any, str], "str | None"]


class SchemaError(AnthropixError, ValueError):
    """The output schema cannot be used (not an object schema, a broken ``$ref``...)."""


def resolve_schema(output_schema: Mapping[str, Any] | type) -> dict[str, Any]:
    """The JSON Schema dict of ``output_schema`` (a dict, or a Pydantic model class), checked to be an object schema."""
    if isinstance(output_schema, type):
        make = getattr(output_schema, "model_json_schema", None)
        if make is None:
            raise SchemaError(f"output_schema: {output_schema.__name__} is not a Pydantic model class nor a dict")
        schema = make()
    elif isinstance(output_schema, Mapping):
        schema = copy.deepcopy(dict(output_schema))
    else:
        raise SchemaError(
            f"output_schema must be a JSON Schema dict or a Pydantic model class, not {type(output_schema).__name__}"
        )
    root = _deref(schema, schema)
    if root.get("type") != "object" or not isinstance(root.get("properties"), Mapping) or not root["properties"]:
        raise SchemaError("output_schema must describe an object with properties (each becomes a column)")
    try:
        json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"output_schema is not JSON ({exc})") from None
    return dict(schema)


def _deref(node: Any, root: Mapping[str, Any], seen: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``node`` with a ``$ref`` (``#/$defs/Name`` or ``#/definitions/Name``) followed."""
    if not isinstance(node, Mapping):
        return {}
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return dict(node)
    if ref in seen:
        raise SchemaError(f"output_schema: $ref {ref} refers to itself (recursive schemas cannot become columns)")
    parts = ref.split("/")
    if len(parts) != 3 or parts[0] != "#" or parts[1] not in ("$defs", "definitions"):
        raise SchemaError(f"output_schema: $ref {ref!r} is not a local #/$defs/... reference")
    target = root.get(parts[1], {}).get(parts[2])
    if not isinstance(target, Mapping):
        raise SchemaError(f"output_schema: $ref {ref!r} names no definition")
    return _deref(target, root, seen | {ref})


def _types(node: Mapping[str, Any]) -> list[str]:
    declared = node.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [t for t in declared if isinstance(t, str)]
    if "enum" in node or "const" in node:
        values = node.get("enum", [node.get("const")])
        return sorted({json_type(v) for v in values})
    return []


def _alternatives(node: Mapping[str, Any]) -> list[Any] | None:
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            return list(node[key])
    return None


# -- the checker --------------------------------------------------------------------------------

_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


#: A problem found under the value checked: where (``.topics[2]``, relative to it) and what (`` is integer, expected string``).
#: The message is only put together, with the caller's path, for a value that fails: valid answers build no strings.
_Problem = tuple[str, str]
_Check = Callable[[Any], "_Problem | None"]


def compile_checker(schema: Mapping[str, Any]) -> Checker:
    """A function ``check(value, path) -> problem | None`` for the whole schema."""
    inner = _compile(schema, schema)

    def check(value: Any, path: str) -> str | None:
        problem = inner(value)
        return None if problem is None else f"{path}{problem[0]}{problem[1]}"

    return check


def _valid(value: Any) -> _Problem | None:
    return None


def _compile(node_in: Any, root: Mapping[str, Any]) -> _Check:
    node = _deref(node_in, root)
    checks: list[_Check] = []
    alternatives = _alternatives(node)
    if alternatives is not None:
        options = [_compile(option, root) for option in alternatives]

        def any_of(value: Any) -> _Problem | None:
            problems = []
            for option in options:
                problem = option(value)
                if problem is None:
                    return None
                problems.append(problem)
            return problems[0]

        checks.append(any_of)
    types = [t for t in _types(node) if t in _TYPE_TESTS] if "type" in node else []
    if types:
        checks.append(_type_checker(types))
    if "enum" in node and isinstance(node["enum"], list):
        checks.append(_enum_checker(list(node["enum"])))
    if "const" in node:
        const = node["const"]
        checks.append(lambda v: None if v == const else ("", f" is not {const!r}"))
    checks.extend(_bounds(node))
    if isinstance(node.get("properties"), Mapping) or "required" in node or node.get("additionalProperties") is False:
        checks.append(_object_checker(node, root))
    if "items" in node or "minItems" in node or "maxItems" in node:
        checks.append(_array_checker(node, root))
    if not checks:
        return _valid
    if len(checks) == 1:
        return checks[0]

    def check(value: Any) -> _Problem | None:
        for one in checks:
            problem = one(value)
            if problem is not None:
                return problem
        return None

    return check


def _type_checker(types: list[str]) -> _Check:
    tests = [_TYPE_TESTS[t] for t in types]
    wanted = " or ".join(types)
    if len(tests) == 1:
        test = tests[0]

        def one_type(value: Any) -> _Problem | None:
            return None if test(value) else ("", f" is {json_type(value)}, expected {wanted}")

        return one_type

    def any_type(value: Any) -> _Problem | None:
        for test in tests:
            if test(value):
                return None
        return ("", f" is {json_type(value)}, expected {wanted}")

    return any_type


def _enum_checker(allowed: list[Any]) -> _Check:
    if allowed and all(type(a) is str for a in allowed):
        # Equal and of the same type as one of them: for strings only, a set lookup says the same.
        strings = frozenset(allowed)

        def string_enum(value: Any) -> _Problem | None:
            return None if type(value) is str and value in strings else ("", f" is not one of {allowed}")

        return string_enum

    def enum_check(value: Any) -> _Problem | None:
        for a in allowed:
            if value == a and type(value) is type(a):
                return None
        return ("", f" is not one of {allowed}")

    return enum_check


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounds(node: Mapping[str, Any]) -> list[_Check]:
    found: list[_Check] = []
    if isinstance(node.get("minimum"), (int, float)):
        low = node["minimum"]
        found.append(lambda v: ("", f" is below {low}") if _number(v) and v < low else None)
    if isinstance(node.get("maximum"), (int, float)):
        high = node["maximum"]
        found.append(lambda v: ("", f" is above {high}") if _number(v) and v > high else None)
    if isinstance(node.get("minLength"), int):
        shortest = node["minLength"]
        found.append(
            lambda v: ("", f" is shorter than {shortest}") if isinstance(v, str) and len(v) < shortest else None
        )
    if isinstance(node.get("maxLength"), int):
        longest = node["maxLength"]
        found.append(lambda v: ("", f" is longer than {longest}") if isinstance(v, str) and len(v) > longest else None)
    return found


def _object_checker(node: Mapping[str, Any], root: Mapping[str, Any]) -> _Check:
    properties = {name: _compile(sub, root) for name, sub in (node.get("properties") or {}).items()}
    required = [name for name in node.get("required", []) if isinstance(name, str)]
    closed = node.get("additionalProperties") is False

    def check(value: Any) -> _Problem | None:
        if not isinstance(value, dict):
            return None  # the type check says so, when the schema asks for an object
        for name in required:
            if name not in value:
                return (f".{name}", " is missing (required)")
        for name, item in value.items():
            sub = properties.get(name)
            if sub is None:
                if closed:
                    return (f".{name}", " is not allowed (additionalProperties: false)")
                continue
            problem = sub(item)
            if problem is not None:
                return (f".{name}{problem[0]}", problem[1])
        return None

    return check


def _array_checker(node: Mapping[str, Any], root: Mapping[str, Any]) -> _Check:
    items = _compile(node["items"], root) if isinstance(node.get("items"), Mapping) else None
    fewest = node.get("minItems") if isinstance(node.get("minItems"), int) else None
    most = node.get("maxItems") if isinstance(node.get("maxItems"), int) else None

    def check(value: Any) -> _Problem | None:
        if not isinstance(value, list):
            return None
        if fewest is not None and len(value) < fewest:
            return ("", f" has {len(value)} item(s), fewer than {fewest}")
        if most is not None and len(value) > most:
            return ("", f" has {len(value)} item(s), more than {most}")
        if items is not None:
            for i, item in enumerate(value):
                problem = items(item)
                if problem is not None:
                    return (f"[{i}]{problem[0]}", problem[1])
        return None

    return check


# -- Arrow columns -------------------------------------------------------------------------------


def answer_fields(schema: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The answer's top-level properties and their (dereferenced) schemas, in the schema's order."""
    root = _deref(schema, schema)
    return [(name, _deref(sub, schema)) for name, sub in root["properties"].items()]


def arrow_type(node_in: Any, root: Mapping[str, Any]) -> pyarrow.DataType:
    """The Arrow type of one schema node: strings, int64, float64, bool, lists and structs.

    Enums are strings; ``[X, null]`` and ``anyOf [X, null]`` are a nullable X; anything that has
    no single Arrow shape (mixed types, free-form objects) is its JSON text, a string.
    """
    import pyarrow as pa

    node = _deref(node_in, root)
    alternatives = _alternatives(node)
    if alternatives is not None:
        non_null = [a for a in alternatives if _types(_deref(a, root)) != ["null"]]
        if len(non_null) == 1:
            return arrow_type(non_null[0], root)
        return pa.string()
    types = [t for t in _types(node) if t != "null"]
    if len(types) == 2 and set(types) == {"integer", "number"}:
        return pa.float64()
    if len(types) != 1:
        return pa.string()
    kind = types[0]
    if kind == "string":
        return pa.string()
    if kind == "integer":
        return pa.int64()
    if kind == "number":
        return pa.float64()
    if kind == "boolean":
        return pa.bool_()
    if kind == "array":
        items = node.get("items")
        return pa.list_(arrow_type(items, root) if isinstance(items, Mapping) else pa.string())
    properties = node.get("properties")
    if isinstance(properties, Mapping) and properties:
        return pa.struct([pa.field(name, arrow_type(sub, root)) for name, sub in properties.items()])
    return pa.string()


def arrow_value(value: Any, kind: pyarrow.DataType) -> Any:
    """``value`` shaped for a column of type ``kind``: JSON text where the column is a string but the value is not."""
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_string(kind):
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if pa.types.is_list(kind):
        return [arrow_value(v, kind.value_type) for v in value] if isinstance(value, list) else None
    if pa.types.is_struct(kind):
        if not isinstance(value, dict):
            return None
        return {f.name: arrow_value(value.get(f.name), f.type) for f in kind}
    if pa.types.is_integer(kind):
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if pa.types.is_floating(kind):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return value

"""Per-request and per-batch checks of Message Batches create bodies.

One rule set, used by two parties that must agree: the emulator applies it to answer a
create with 400, and the CreateBatchOperator applies it before sending, so a user learns
about a bad request from a message that names the field, the ``custom_id`` and (for the
rules that differ between API versions) the version and the fix, instead of paying for
a batch whose requests all come back ``errored``.

Pure Python, no Airflow imports, no I/O: cheap enough to run over 100,000 requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_anthropix.api.errors import ValidationProblem
from airflow_provider_anthropix.api.limits import (
    CUSTOM_ID_RE,
    DEFAULT_API_VERSION,
    MAX_BODY_BYTES,
    MAX_REQUESTS,
    check_api_version,
)

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "MIN_THINKING_BUDGET",
    "BatchChecker",
    "ValidationProblem",
    "check_api_version",
    "check_body_size",
    "output_config_problem",
    "source_problem",
    "thinking_problem",
    "tool_choice_problem",
    "validate_batch",
    "validate_request",
]

#: The version that still accepts the sampling parameters; named in the fix of every version rule.
LEGACY_API_VERSION = "2023-06-01"
#: Versions that reject temperature/top_p/top_k and a few block placements.
_STRICT_VERSIONS = frozenset({"2026-10-21"})
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k")
_ENTRY_FIELDS = frozenset({"custom_id", "params"})
_ROLES = ("user", "assistant")
#: The message for a required param that is absent (callers match it to suggest ``default_params``).
MISSING_PARAM = "params.{} is missing"
#: Media types a base64 image source may declare.
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
#: What a document source of each type must declare as its media type.
_DOCUMENT_MEDIA_TYPES = {"base64": "application/pdf", "text": "text/plain"}
#: The smallest thinking budget the API takes.
MIN_THINKING_BUDGET = 1024
_THINKING_TYPES = ("enabled", "adaptive", "disabled")
_TOOL_CHOICE_TYPES = ("auto", "any", "none", "tool")
_CUSTOM_ID_MATCH = CUSTOM_ID_RE.fullmatch  # not .match: its $ would accept a trailing newline


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python, but JSON true is not a number to the API.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _not_accepted_by(api_version: str) -> str:
    return f"is not accepted by API version {api_version}"


def _check_sampling(params: Mapping[str, Any], api_version: str, problems: list[str]) -> None:
    strict = api_version in _STRICT_VERSIONS
    for name in _SAMPLING_FIELDS:
        if name not in params:
            continue
        value = params[name]
        if strict:
            problems.append(
                f"params.{name} {_not_accepted_by(api_version)} (even at its default value); remove it "
                f"or set the connection's anthropic_version to {LEGACY_API_VERSION}"
            )
        elif name == "top_k":
            if not _is_int(value) or value < 0:
                problems.append(f"params.top_k must be an integer >= 0; got {value!r}")
        elif not _is_number(value) or not 0 <= value <= 1:
            problems.append(f"params.{name} must be a number between 0 and 1; got {value!r}")


def source_problem(kind: str, source: Any) -> str | None:
    """What is wrong with the ``source`` of an ``image`` or ``document`` block (None: nothing we check).

    Only the declared media types are checked: a base64 image must be PNG, JPEG, GIF or
    WebP and a base64 document a PDF, as the API answers every other type with a 400 per
    request. Source types this module does not know (``file``, ``content``, ...) pass, so a
    newer API feature is not refused here. The returned text follows the block's path
    (``.source.media_type ...``). Shared with the emulator's fast intake, which must agree.
    """
    if not isinstance(source, Mapping):
        return ".source must be an object with a string 'type'"
    source_type = source.get("type")
    if not isinstance(source_type, str):
        return ".source must be an object with a string 'type'"
    if source_type == "url":
        return None if isinstance(source.get("url"), str) else ".source.url must be a string"
    media_type = source.get("media_type")
    if kind == "image":
        if source_type != "base64":
            return None
        if media_type not in IMAGE_MEDIA_TYPES:
            return f".source.media_type must be one of {', '.join(IMAGE_MEDIA_TYPES)} for a base64 image; got {_short_repr(media_type)}"
    else:
        wanted = _DOCUMENT_MEDIA_TYPES.get(source_type)
        if wanted is None:
            return None
        if media_type != wanted:
            return f".source.media_type must be {wanted!r} for a {source_type} document; got {_short_repr(media_type)}"
    if not isinstance(source.get("data"), str):
        return ".source.data must be a string"
    return None


def _check_blocks(blocks: list[Any], where: str, role: str | None, api_version: str, problems: list[str]) -> None:
    strict = api_version in _STRICT_VERSIONS
    for b, block in enumerate(blocks):
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            problems.append(f"{where}[{b}] must be an object with a string 'type'")
            continue
        kind = block["type"]
        if kind == "image" or kind == "document":
            problem = source_problem(kind, block.get("source"))
            if problem is not None:
                problems.append(f"{where}[{b}]{problem}")
        if not strict or role is None:
            continue
        if role == "assistant" and kind == "document":
            problems.append(
                f"{where}[{b}]: a document block in an assistant message {_not_accepted_by(api_version)}; "
                f"move it to a user message or set the connection's anthropic_version to {LEGACY_API_VERSION}"
            )
        elif role == "user" and kind == "text" and block.get("citations"):
            problems.append(
                f"{where}[{b}].citations: a text block with citations in a user message "
                f"{_not_accepted_by(api_version)}; remove the citations or set the connection's "
                f"anthropic_version to {LEGACY_API_VERSION}"
            )


def _check_messages(messages: Any, api_version: str, problems: list[str]) -> None:
    if messages is None:
        problems.append("params.messages is missing; give a non-empty list of {role, content} turns")
        return
    if not isinstance(messages, list) or not messages:
        problems.append("params.messages must be a non-empty list of {role, content} turns")
        return
    for m, message in enumerate(messages):
        where = f"params.messages[{m}]"
        if not isinstance(message, Mapping):
            problems.append(f"{where} must be an object with role and content")
            continue
        role = message.get("role")
        if role not in _ROLES:
            problems.append(f"{where}.role must be 'user' or 'assistant'; got {role!r}")
            role = None
        elif m == 0 and role != "user":
            problems.append(f"{where}.role must be 'user': the first turn comes from the user")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if isinstance(content, list):
            _check_blocks(content, f"{where}.content", role, api_version, problems)
        else:
            problems.append(f"{where}.content must be a string or a list of content blocks")


def _check_optional_fields(params: Mapping[str, Any], problems: list[str]) -> None:
    if "system" in params:
        system = params["system"]
        if isinstance(system, list):
            for b, block in enumerate(system):
                if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
                    problems.append(f"params.system[{b}] must be an object with a string 'type'")
        elif not isinstance(system, str):
            problems.append("params.system must be a string or a list of content blocks")
    if "stop_sequences" in params:
        stops = params["stop_sequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            problems.append("params.stop_sequences must be a list of strings")
    if "metadata" in params and not isinstance(params["metadata"], Mapping):
        problems.append("params.metadata must be an object")
    tools = params.get("tools")
    if "tools" in params:
        if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
            problems.append("params.tools must be a list of objects")
            tools = None
        else:
            for t, tool in enumerate(tools):
                if not isinstance(tool.get("name"), str) or not tool["name"]:
                    problems.append(f"params.tools[{t}].name must be a non-empty string")
    if "tool_choice" in params:
        _add(problems, "params.tool_choice", tool_choice_problem(params["tool_choice"], tools))
    if "thinking" in params:
        _add(problems, "params.thinking", thinking_problem(params["thinking"], params.get("max_tokens")))
    if "output_config" in params:
        _add(problems, "params.output_config", output_config_problem(params["output_config"]))


def _add(problems: list[str], where: str, problem: str | None) -> None:
    if problem is not None:
        problems.append(where + problem)


def tool_choice_problem(tool_choice: Any, tools: Any) -> str | None:
    """What is wrong with ``tool_choice`` given the request's ``tools`` (None: nothing).

    A ``{"type": "tool", "name": ...}`` choice must name one of ``tools``: the API refuses
    a forced call of a tool it was not given. The text follows ``params.tool_choice``.
    """
    if not isinstance(tool_choice, Mapping):
        return " must be an object"
    kind = tool_choice.get("type")
    if kind not in _TOOL_CHOICE_TYPES:
        return f".type must be one of {', '.join(map(repr, _TOOL_CHOICE_TYPES))}; got {_short_repr(kind)}"
    if kind != "tool":
        return None
    name = tool_choice.get("name")
    if not isinstance(name, str):
        return ".name must be a string naming one of params.tools when type is 'tool'"
    names = [t.get("name") for t in tools if isinstance(t, Mapping)] if isinstance(tools, list) else []
    if name not in names:
        given = ", ".join(repr(n) for n in names[:5] if isinstance(n, str)) or "none"
        return f".name {_short_repr(name)} names no tool in params.tools (tools given: {given})"
    return None


def thinking_problem(thinking: Any, max_tokens: Any) -> str | None:
    """What is wrong with ``thinking`` (None: nothing); the text follows ``params.thinking``.

    An ``enabled`` budget must be at least :data:`MIN_THINKING_BUDGET` and below
    ``max_tokens`` (the thinking is part of the output ``max_tokens`` caps). A bad
    ``max_tokens`` is reported on its own, so the comparison is skipped then.
    """
    if not isinstance(thinking, Mapping):
        return " must be an object"
    kind = thinking.get("type")
    if kind not in _THINKING_TYPES:
        return f".type must be one of {', '.join(map(repr, _THINKING_TYPES))}; got {_short_repr(kind)}"
    if kind != "enabled":
        return None
    budget: Any = thinking.get("budget_tokens")
    if not _is_int(budget) or budget < MIN_THINKING_BUDGET:
        return f".budget_tokens must be an integer >= {MIN_THINKING_BUDGET:,} when thinking is enabled; got {_short_repr(budget)}"
    if _is_int(max_tokens) and budget >= max_tokens:
        return (
            f".budget_tokens ({budget:,}) must be less than params.max_tokens ({max_tokens:,}); "
            "raise max_tokens or lower the budget"
        )
    return None


def output_config_problem(config: Any) -> str | None:
    """What is wrong with ``output_config`` (None: nothing); the text follows ``params.output_config``.

    A ``json_schema`` format must carry its schema as an object; other format types and
    other keys pass unchecked (the schema itself is the API's to judge: checking it per
    request would cost more than the rest of validation together).
    """
    if not isinstance(config, Mapping):
        return " must be an object"
    if "format" in config:
        fmt = config["format"]
        if not isinstance(fmt, Mapping) or not isinstance(fmt.get("type"), str):
            return ".format must be an object with a string 'type'"
        if fmt["type"] == "json_schema" and not isinstance(fmt.get("schema"), Mapping):
            return ".format.schema must be an object (a JSON Schema) for a json_schema format"
    if "effort" in config and not isinstance(config["effort"], str):
        return f".effort must be a string such as 'low', 'medium' or 'high'; got {_short_repr(config['effort'])}"
    return None


def _check_params(params: Any, api_version: str, problems: list[str]) -> None:
    if params is None:
        problems.append("params is missing; give a Messages API body (model, max_tokens, messages)")
        return
    if not isinstance(params, Mapping):
        problems.append("params must be an object (a Messages API body)")
        return
    model = params.get("model")
    if model is None:
        problems.append(MISSING_PARAM.format("model"))
    elif not isinstance(model, str) or not model:
        problems.append(f"params.model must be a non-empty string; got {model!r}")
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        problems.append(MISSING_PARAM.format("max_tokens"))
    elif not _is_int(max_tokens) or max_tokens < 1:
        problems.append(f"params.max_tokens must be an integer >= 1; got {max_tokens!r}")
    _check_messages(params.get("messages"), api_version, problems)
    if "stream" in params:
        problems.append("params.stream is not allowed in a batch request; remove it")
    _check_sampling(params, api_version, problems)
    _check_optional_fields(params, problems)


def validate_request(request: Any, *, api_version: str) -> list[str]:
    """Return the problems of one ``{"custom_id", "params"}`` entry (empty when it is valid).

    Messages name the field (``params.messages[0].role``) and, for rules that only one API
    version has, the version and the fix. They do not repeat the custom_id: wrap them in a
    :class:`ValidationProblem` (or use :class:`BatchChecker`) to say which request it is.

    :param request: one entry of the create body's ``requests`` list, as decoded JSON.
    :param api_version: the ``anthropic-version`` the request is (or will be) sent with.
    :raises ValueError: ``api_version`` is not a version the API serves.
    """
    version_problem = check_api_version(api_version)
    if version_problem is not None:
        raise ValueError(version_problem)
    problems: list[str] = []
    if not isinstance(request, Mapping):
        problems.append("a request must be an object with custom_id and params")
        return problems
    custom_id = request.get("custom_id")
    if custom_id is None:
        problems.append("custom_id is missing")
    elif not isinstance(custom_id, str) or CUSTOM_ID_RE.fullmatch(custom_id) is None:
        problems.append(
            f"custom_id {_short_repr(custom_id)} is invalid: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
        )
    extra = [key for key in request if key not in _ENTRY_FIELDS]
    if extra:
        names = ", ".join(repr(key) for key in extra)
        problems.append(f"unexpected field {names} in the request; only custom_id and params are allowed")
    _check_params(request.get("params"), api_version, problems)
    return problems


def _plainly_valid(request: dict[str, Any], api_version: str) -> bool:
    """True only when :func:`validate_request` would find nothing in ``request`` (a plain ``dict``).

    The common shape checked with exact types (``dict``, ``list``, ``str``, ``int``), without
    building a message path per turn or asking ``Mapping`` (an ABC) about every value. One-sided
    on purpose: it may answer False for a valid request (the caller then runs
    :func:`validate_request`, which words the problems), never True for one with a problem.
    What it does not check inline (content blocks, sampling fields, the optional fields) goes
    through the very functions :func:`validate_request` uses.
    """
    if len(request) != 2:
        return False
    custom_id = request.get("custom_id")
    params = request.get("params")
    # Two keys, both present with these types: no field but custom_id and params.
    if type(custom_id) is not str or type(params) is not dict or _CUSTOM_ID_MATCH(custom_id) is None:
        return False
    model = params.get("model")
    max_tokens = params.get("max_tokens")
    messages = params.get("messages")
    if type(model) is not str or not model or type(max_tokens) is not int or max_tokens < 1:
        return False
    if type(messages) is not list or not messages:
        return False
    # Three keys, the three above: no stream, sampling or optional field to look at.
    others = len(params) != 3
    if others and "stream" in params:
        return False
    scratch: list[str] = []
    first = True
    for message in messages:
        if type(message) is not dict:
            return False
        role = message.get("role")
        if role != "user" and (first or role != "assistant"):
            return False
        first = False
        content = message.get("content")
        if type(content) is list:
            _check_blocks(content, "", role, api_version, scratch)
        elif type(content) is not str:
            return False
    if others:
        _check_sampling(params, api_version, scratch)
        _check_optional_fields(params, scratch)
    return not scratch


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _custom_id_of(request: Any) -> str | None:
    if isinstance(request, Mapping):
        custom_id = request.get("custom_id")
        if isinstance(custom_id, str):
            return custom_id if len(custom_id) <= 80 else custom_id[:77] + "..."
    return None


def check_body_size(size: int, *, max_body_bytes: int = MAX_BODY_BYTES) -> ValidationProblem | None:
    """Return a problem when an encoded create body is larger than the API accepts."""
    if size <= max_body_bytes:
        return None
    return ValidationProblem(
        f"the encoded batch is {size:,} bytes, over the API's limit of {max_body_bytes:,} bytes; "
        "split it into several batches"
    )


class BatchChecker:
    """Checks a batch one request at a time, so a 100,000-line file is never held whole.

    Per-request rules come from :func:`validate_request`; on top of them it tracks what
    only the whole batch can tell: that custom_ids are unique and that the count stays
    within ``max_requests``.

    :param api_version: the version the batch will be sent with.
    :param max_requests: the most requests a batch may hold (the API's limit by default).
    """

    def __init__(self, *, api_version: str = DEFAULT_API_VERSION, max_requests: int = MAX_REQUESTS) -> None:
        version_problem = check_api_version(api_version)
        if version_problem is not None:
            raise ValueError(version_problem)
        self.api_version = api_version
        self.max_requests = max_requests
        self.count = 0
        self.problems: list[ValidationProblem] = []
        # custom_id -> where it was first used, to point at both places on a duplicate: its line
        # (>= 0) or, for a request without one, -1 - its index. One int, not a tuple: a job's
        # split keeps a million of them.
        self._seen: dict[str, int] = {}

    @property
    def ok(self) -> bool:
        """True while no problem has been found."""
        return not self.problems

    def check(self, request: Any, *, file: str | None = None, line: int | None = None) -> list[ValidationProblem]:
        """Check the next request of the batch; return (and remember) its problems.

        :param request: one decoded ``{"custom_id", "params"}`` entry.
        :param file: where it came from, for messages (e.g. the input JSONL's path).
        :param line: its 1-based line in ``file``.
        """
        index = self.count
        self.count = count = index + 1
        seen = self._seen
        if (
            type(request) is dict
            and count != self.max_requests + 1
            and _plainly_valid(request, self.api_version)
            and (custom_id := request["custom_id"]) not in seen
        ):
            seen[custom_id] = line if line is not None else -1 - index
            return []
        custom_id = _custom_id_of(request)
        found = [
            ValidationProblem(message, index=index, custom_id=custom_id, file=file, line=line)
            for message in validate_request(request, api_version=self.api_version)
        ]
        if custom_id is not None and CUSTOM_ID_RE.fullmatch(custom_id) is not None:
            first = seen.get(custom_id)
            if first is None:
                seen[custom_id] = line if line is not None else -1 - index
            else:
                where = f"line {first}" if first >= 0 else f"requests[{-1 - first}]"
                found.append(
                    ValidationProblem(
                        f"custom_id is used more than once in the batch (first at {where}); custom_ids must be unique",
                        index=index,
                        custom_id=custom_id,
                        file=file,
                        line=line,
                    )
                )
        if self.count == self.max_requests + 1:
            found.append(
                ValidationProblem(
                    f"the batch has more than {self.max_requests:,} requests, the most one batch may hold; "
                    "split it into several batches",
                    index=index,
                    file=file,
                    line=line,
                )
            )
        self.problems.extend(found)
        return found

    def finish(self) -> list[ValidationProblem]:
        """Check what only the end of the input can tell (an empty batch); return all problems."""
        if self.count == 0:
            self.problems.append(
                ValidationProblem(f"the batch has no requests; a batch holds 1 to {self.max_requests:,}")
            )
        return self.problems


def validate_batch(
    requests: Iterable[Any], *, api_version: str = DEFAULT_API_VERSION, max_requests: int = MAX_REQUESTS
) -> list[ValidationProblem]:
    """Check a whole ``requests`` list at once (convenience over :class:`BatchChecker`)."""
    checker = BatchChecker(api_version=api_version, max_requests=max_requests)
    for request in requests:
        checker.check(request)
    return checker.finish()

"""Every request shape users send (api-notes, "Request shapes users send"), two ways.

- A fixed, hand-written corpus: ``tests/data/request_shapes/valid.jsonl`` (one request a
  line) and ``invalid.jsonl`` (one case a line: the request, the API version, and the field
  the refusal must name). :func:`load_valid` and :func:`load_invalid` read them.
- Hypothesis strategies that compose the same shapes at random: :func:`valid_requests`
  and :func:`invalid_requests` (a valid request with one thing broken, and the field that
  breaks).

Both stay inside what the API really accepts under the default version 2026-10-21: no
``temperature``/``top_p``/``top_k``, no document in an assistant turn, no citations on a
user text block, a thinking budget of 1,024 or more below ``max_tokens``, at most four
``cache_control`` breakpoints, a ``tool_choice`` of type ``tool`` only naming a tool the
request has, and none of the combinations the API refuses (thinking with a forced tool,
with a prefill or with an old tool exchange; a prefill with a structured output).
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support import paths

DATA = paths.DATA / "request_shapes"
VALID_FILE = DATA / "valid.jsonl"
INVALID_FILE = DATA / "invalid.jsonl"

#: Models the emulator serves and the default price table knows.
MODELS = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5")
#: The first bytes of each image type the API takes (the emulator never looks further).
IMAGE_MAGIC = {
    "image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01",
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    "image/gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00",
    "image/webp": b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00",
}
PDF_MAGIC = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"

#: Shared prefixes for ``default_params``: system as cached text blocks (1 h), and tools.
DEFAULT_TOOLS = [
    {
        "name": "lookup_order",
        "description": "Find an order by its number.",
        "input_schema": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
        "strict": True,
        "cache_control": {"type": "ephemeral"},
    }
]
DEFAULT_SYSTEM_BLOCKS = [
    {"type": "text", "text": "You answer questions about orders."},
    # Long enough to be cached (over 2,048 tokens, the smallest models' minimum).
    {
        "type": "text",
        "text": "Answer in one short sentence. " * 400,
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
    },
]
DEFAULT_SYSTEM_STRING = "You answer questions about orders. Be brief."


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def large_request(custom_id: str, megabytes: float = 3.0, model: str = MODELS[0]) -> dict[str, Any]:
    """One request whose line is several MB: a base64 PDF and a base64 PNG, as users send scans."""
    size = int(megabytes * (1 << 20))
    pattern = bytes(range(256))
    pdf = PDF_MAGIC + (pattern * (size // 256 + 1))[:size]
    png = IMAGE_MAGIC["image/png"] + pattern * 256
    content = [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(pdf)}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(png)}},
        {"type": "text", "text": "Summarise the scanned document and describe the picture."},
    ]
    params = {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": content}]}
    return {"custom_id": custom_id, "params": params}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    # Split on newlines only: the corpus holds a raw U+2028, which str.splitlines would cut at.
    return [json.loads(line) for line in path.read_text("utf-8").split("\n") if line.strip()]


def load_valid() -> list[dict[str, Any]]:
    """The hand-written valid requests (``{"custom_id", "params"}`` each)."""
    return _read_jsonl(VALID_FILE)


def load_invalid() -> list[dict[str, Any]]:
    """The hand-written invalid cases: ``{"case", "api_version", "field", "request"}`` each."""
    return _read_jsonl(INVALID_FILE)


# -- strategies --------------------------------------------------------------------------------------

#: Any text but lone surrogates (not UTF-8) and "[" (so no text makes an emulator marker by chance).
_CHARS = st.characters(codec="utf-8", exclude_characters="[")
#: The API refuses text blocks (and stop sequences) of white space only.
TEXT = st.text(_CHARS, min_size=1, max_size=30).filter(str.strip)
#: A prefill may not end in white space (the API refuses it).
PREFILL = st.text(
    st.characters(codec="utf-8", exclude_characters="[", exclude_categories=("Zs", "Zl", "Zp", "Cc")), min_size=1
)
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
CACHE = st.sampled_from([{"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}, {"type": "ephemeral", "ttl": "5m"}])
SCHEMA = st.fixed_dictionaries(
    {
        "type": st.just("object"),
        "properties": st.dictionaries(NAME, st.sampled_from([{"type": "string"}, {"type": "integer"}]), max_size=3),
    }
).map(lambda s: {**s, "additionalProperties": False, "required": sorted(s["properties"])})


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


# Strategies are built once, at import: building one per draw costs Hypothesis a validation each time.
TEXT_BLOCK = st.builds(lambda text: {"type": "text", "text": text}, TEXT)


def _image_block() -> st.SearchStrategy[dict[str, Any]]:
    inline = st.sampled_from(sorted(IMAGE_MAGIC)).map(
        lambda media: {"type": "base64", "media_type": media, "data": b64(IMAGE_MAGIC[media])}
    )
    url = NAME.map(lambda name: {"type": "url", "url": f"https://images.example.com/{name}.png"})
    return st.builds(lambda source: {"type": "image", "source": source}, inline | url)


def _document_block() -> st.SearchStrategy[dict[str, Any]]:
    text = TEXT.map(lambda data: {"type": "text", "media_type": "text/plain", "data": data})
    pdf = st.just({"type": "base64", "media_type": "application/pdf", "data": b64(PDF_MAGIC)})
    url = NAME.map(lambda name: {"type": "url", "url": f"https://docs.example.com/{name}.pdf"})
    return st.builds(
        lambda source, title, cited: {
            "type": "document",
            "source": source,
            **({"title": title} if title is not None else {}),
            **({"citations": {"enabled": True}} if cited else {}),
        },
        text | pdf | url,
        _maybe(TEXT),
        st.booleans(),
    )


IMAGE_BLOCK = _image_block()
DOCUMENT_BLOCK = _document_block()
USER_CONTENT = TEXT | st.lists(st.one_of(TEXT_BLOCK, IMAGE_BLOCK, DOCUMENT_BLOCK), min_size=1, max_size=4)
ASSISTANT_CONTENT = TEXT | st.lists(TEXT_BLOCK, min_size=1, max_size=2)
TOOL_USE_ID = st.from_regex(r"[A-Za-z0-9]{8,24}", fullmatch=True).map(lambda tail: "toolu_" + tail)
EFFORT = st.sampled_from(["low", "medium", "high"])


def _tools_list() -> st.SearchStrategy[list[dict[str, Any]]]:
    """1-3 tools with distinct names; ``strict`` on some, a cache breakpoint on the last one at most."""

    def build(names: list[str], schemas: list[Any], strict: list[bool], cache: Any) -> list[dict[str, Any]]:
        tools = []
        for name, schema, is_strict in zip(names, schemas, strict, strict=False):
            tool: dict[str, Any] = {"name": name, "description": f"The {name} tool.", "input_schema": schema}
            if is_strict:
                tool["strict"] = True
            tools.append(tool)
        if cache is not None:
            tools[-1]["cache_control"] = cache
        return tools

    return st.builds(
        build,
        st.lists(NAME, min_size=1, max_size=3, unique=True),
        st.lists(SCHEMA, min_size=3, max_size=3),
        st.lists(st.booleans(), min_size=3, max_size=3),
        _maybe(CACHE),
    )


TOOLS = _tools_list()


@st.composite
def valid_params(draw: st.DrawFn) -> dict[str, Any]:
    """A Messages body valid under both API versions, mixing the optional shapes at random."""
    thinking = draw(st.sampled_from([None, "enabled", "adaptive"]))
    max_tokens = draw(st.integers(1025, 64_000) if thinking == "enabled" else st.integers(1, 64_000))
    params: dict[str, Any] = {"model": draw(st.sampled_from(MODELS)), "max_tokens": max_tokens}
    if thinking == "enabled":
        params["thinking"] = {"type": "enabled", "budget_tokens": draw(st.integers(1024, max_tokens - 1))}
    elif thinking == "adaptive":
        params["thinking"] = {"type": "adaptive"}
    system = draw(st.sampled_from(["none", "string", "blocks"]))
    if system == "string":
        params["system"] = draw(TEXT)
    elif system == "blocks":
        blocks = draw(st.lists(TEXT_BLOCK, min_size=1, max_size=3))
        cache = draw(_maybe(CACHE))
        if cache is not None:
            blocks[-1] = {**blocks[-1], "cache_control": cache}
        params["system"] = blocks
    tools = draw(_maybe(TOOLS))
    if tools is not None:
        params["tools"] = tools
        kinds = ["auto", "none"] if thinking else ["auto", "any", "none", "tool"]
        choice = draw(_maybe(st.sampled_from(kinds)))
        if choice == "tool":
            params["tool_choice"] = {"type": "tool", "name": draw(st.sampled_from([t["name"] for t in tools]))}
        elif choice is not None:
            params["tool_choice"] = {"type": choice}
    if draw(st.booleans()):
        config: dict[str, Any] = {"format": {"type": "json_schema", "schema": draw(SCHEMA)}}
        if draw(st.booleans()):
            config["effort"] = draw(EFFORT)
        params["output_config"] = config
    elif draw(st.booleans()):
        params["output_config"] = {"effort": draw(EFFORT)}
    if draw(st.booleans()):
        params["stop_sequences"] = draw(st.lists(TEXT, min_size=1, max_size=3))
    if draw(st.booleans()):
        params["metadata"] = {"user_id": draw(NAME)}
    structured = "format" in params.get("output_config", {})
    params["messages"] = draw(_conversation(tools, thinking is not None, structured))
    if structured:
        # Citations and structured outputs do not go together (the API refuses the pair).
        for message in params["messages"]:
            if isinstance(message["content"], list):
                for block in message["content"]:
                    block.pop("citations", None)
    return params


@st.composite
def _conversation(draw: st.DrawFn, tools: list[dict[str, Any]] | None, thinking: bool, structured: bool) -> list[Any]:
    turns = draw(st.integers(0, 2))
    messages: list[dict[str, Any]] = [{"role": "user", "content": draw(USER_CONTENT)}]
    for _ in range(turns):
        messages.append({"role": "assistant", "content": draw(ASSISTANT_CONTENT)})
        messages.append({"role": "user", "content": draw(USER_CONTENT)})
    if tools and not thinking and draw(st.booleans()):
        tool = draw(st.sampled_from(tools))
        use_id = draw(TOOL_USE_ID)
        call: list[dict[str, Any]] = [{"type": "tool_use", "id": use_id, "name": tool["name"], "input": {}}]
        if draw(st.booleans()):
            call.insert(0, {"type": "text", "text": draw(TEXT)})
        answer: Any = draw(ASSISTANT_CONTENT)
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": use_id, "content": answer}
        if draw(st.booleans()):
            result["is_error"] = True
        messages += [{"role": "assistant", "content": call}, {"role": "user", "content": [result]}]
    if draw(st.booleans()):
        # One breakpoint in the conversation: on a text block of the last user turn.
        last = messages[-1]
        if isinstance(last["content"], str):
            last["content"] = [{"type": "text", "text": last["content"], "cache_control": draw(CACHE)}]
        elif last["content"][-1]["type"] in ("text", "image", "document", "tool_result"):
            last["content"][-1] = {**last["content"][-1], "cache_control": draw(CACHE)}
    if not thinking and not structured and draw(st.booleans()):
        messages.append({"role": "assistant", "content": draw(PREFILL)})
    return messages


_ID_TAIL = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
VALID_PARAMS = valid_params()


def valid_requests(prefix: str = "h") -> st.SearchStrategy[dict[str, Any]]:
    """``{"custom_id", "params"}`` with a valid id (made unique by the caller where it matters)."""
    return st.builds(lambda tail, params: {"custom_id": f"{prefix}-{tail}", "params": params}, _ID_TAIL, VALID_PARAMS)


# -- one thing broken ----------------------------------------------------------------------------------

Breaker = Callable[[dict[str, Any], st.DrawFn], str]


def _user_turn(params: dict[str, Any]) -> dict[str, Any]:
    return params["messages"][0]


def _blocks(message: dict[str, Any]) -> list[Any]:
    if isinstance(message["content"], str):
        message["content"] = [{"type": "text", "text": message["content"]}]
    return list(message["content"])


def _sampling(name: str, value: Any) -> Breaker:
    def breaker(request: dict[str, Any], draw: st.DrawFn) -> str:
        request["params"][name] = value
        return f"params.{name} is not accepted by API version 2026-10-21"

    return breaker


def _document_in_assistant(request: dict[str, Any], draw: st.DrawFn) -> str:
    messages = request["params"]["messages"]
    doc = draw(DOCUMENT_BLOCK)
    messages.insert(1, {"role": "assistant", "content": [doc]})
    messages.insert(2, {"role": "user", "content": "and then?"})
    return "params.messages[1].content[0]: a document block in an assistant message"


def _citations_in_user(request: dict[str, Any], draw: st.DrawFn) -> str:
    turn = _user_turn(request["params"])
    blocks = _blocks(turn)
    cited = {
        "type": "char_location",
        "cited_text": "x",
        "document_index": 0,
        "start_char_index": 0,
        "end_char_index": 1,
    }
    turn["content"] = [{"type": "text", "text": "see", "citations": [cited]}, *blocks]
    return "params.messages[0].content[0].citations"


def _budget_over_max_tokens(request: dict[str, Any], draw: st.DrawFn) -> str:
    params = request["params"]
    params["max_tokens"] = draw(st.integers(1024, 8192))
    params["thinking"] = {"type": "enabled", "budget_tokens": draw(st.integers(params["max_tokens"], 10_000))}
    params.pop("tool_choice", None)
    return "params.thinking.budget_tokens"


def _bad_media_type(request: dict[str, Any], draw: st.DrawFn) -> str:
    turn = _user_turn(request["params"])
    media = draw(st.sampled_from(["image/bmp", "image/svg+xml", "application/pdf", "png", None]))
    image = {"type": "image", "source": {"type": "base64", "media_type": media, "data": "AAAA"}}
    turn["content"] = [image, *_blocks(turn)]
    return "params.messages[0].content[0].source.media_type"


def _forced_tool_missing(request: dict[str, Any], draw: st.DrawFn) -> str:
    params = request["params"]
    names = {t["name"] for t in params.get("tools", [])}
    params["tool_choice"] = {"type": "tool", "name": draw(NAME.filter(lambda n: n not in names))}
    return "params.tool_choice.name"


def _set(name: str, value: Any, field: str) -> Breaker:
    def breaker(request: dict[str, Any], draw: st.DrawFn) -> str:
        request["params"][name] = value
        return field

    return breaker


def _drop(name: str) -> Breaker:
    def breaker(request: dict[str, Any], draw: st.DrawFn) -> str:
        del request["params"][name]
        return f"params.{name} is missing"

    return breaker


def _assistant_first(request: dict[str, Any], draw: st.DrawFn) -> str:
    request["params"]["messages"].insert(0, {"role": "assistant", "content": "Hello."})
    return "params.messages[0].role"


def _bad_custom_id(request: dict[str, Any], draw: st.DrawFn) -> str:
    request["custom_id"] = draw(st.sampled_from(["", "x" * 65, "has space", "dot.ted", "ünï", "a/b"]))
    return "custom_id"


BREAKERS: dict[str, Breaker] = {
    "temperature": _sampling("temperature", 0.5),
    "top_p": _sampling("top_p", 0.9),
    "top_k": _sampling("top_k", 5),
    "document-in-assistant": _document_in_assistant,
    "citations-in-user": _citations_in_user,
    "thinking-budget": _budget_over_max_tokens,
    "image-media-type": _bad_media_type,
    "tool-choice-names-no-tool": _forced_tool_missing,
    "stream": _set("stream", True, "params.stream is not allowed"),
    "model-missing": _drop("model"),
    "max-tokens-missing": _drop("max_tokens"),
    "messages-empty": _set("messages", [], "params.messages must be a non-empty list"),
    "assistant-first": _assistant_first,
    "custom-id": _bad_custom_id,
}


@st.composite
def invalid_requests(draw: st.DrawFn) -> tuple[str, dict[str, Any], str]:
    """``(breaker name, request, text the refusal must contain)``: a valid request, one thing broken."""
    request = copy.deepcopy(draw(valid_requests("bad")))
    name = draw(st.sampled_from(sorted(BREAKERS)))
    field = BREAKERS[name](request, draw)
    return name, request, field


def sample(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` draws of ``strategy``, the same on every run (for corpora fed to real runs, not properties)."""
    found: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found[:count]

"""The one msgspec schema of a results line, in two depths: what the summary reads, and what Parquet adds.

A results line is ``{"custom_id": ..., "result": {"type": ..., "message": {...} | "error": {...}}}``.
msgspec decodes only the fields a Struct declares and skips the rest in C, so each reader
should declare no more than it uses: the message text is most of a line's bytes, and
decoding it into a ``str`` costs about a fifth more per line than skipping it.

- :class:`ResultLine` (:data:`LINE_DECODER`): custom_id, the result type, the model and
  token usage, the error type. The summary, the retry scan and the merge read this.
- :class:`ResultRow` (:data:`ROW_DECODER`): the same fields, plus the message's content
  blocks and stop reason and the error's message: one Parquet row. Each ``Full`` class is
  a subclass of its summary class, so a field is declared once and both decoders check it
  the same way.
"""

from __future__ import annotations

import msgspec


class Usage(msgspec.Struct, frozen=True, gc=False):
    """Token counts of one succeeded request (None when the line leaves a count out)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class Message(msgspec.Struct, frozen=True, gc=False):
    """The part of a succeeded result's Message the summary needs."""

    model: str = ""
    usage: Usage | None = None


class ErrorDetail(msgspec.Struct, frozen=True, gc=False):
    type: str = ""


class ErrorEnvelope(msgspec.Struct, frozen=True, gc=False):
    error: ErrorDetail | None = None


class Result(msgspec.Struct, frozen=True, gc=False):
    type: str
    message: Message | None = None
    error: ErrorEnvelope | None = None


class ResultLine(msgspec.Struct, frozen=True, gc=False):
    """One results line, as the summary reads it."""

    custom_id: str
    result: Result


# -- what a Parquet row adds ------------------------------------------------------------------------


class ContentBlock(msgspec.Struct, frozen=True, gc=False):
    type: str = ""
    text: str | None = None


class FullMessage(Message, frozen=True, gc=False):
    content: list[ContentBlock] = []
    stop_reason: str | None = None


class FullErrorDetail(ErrorDetail, frozen=True, gc=False):
    message: str | None = None


class FullErrorEnvelope(ErrorEnvelope, frozen=True, gc=False):
    error: FullErrorDetail | None = None


class FullResult(Result, frozen=True, gc=False):
    message: FullMessage | None = None
    error: FullErrorEnvelope | None = None


class ResultRow(ResultLine, frozen=True, gc=False):
    """One results line with everything a Parquet row holds."""

    result: FullResult


#: Decode one line, or a whole block of lines with ``decode_lines``.
LINE_DECODER = msgspec.json.Decoder(ResultLine)
ROW_DECODER = msgspec.json.Decoder(ResultRow)

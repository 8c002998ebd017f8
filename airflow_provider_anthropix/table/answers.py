"""Result lines to answer rows: each answer parsed, checked against the schema, and laid out as typed columns.

An answer that a schema was asked for and that does not hold to it is the outcome
``invalid_output`` (a ``refusal``, a ``max_tokens`` cut, text that is not JSON, JSON that breaks
the schema), with the reason in ``_error``. Without a schema the answer's text is one column.
Columns are built a slice at a time into Arrow arrays, so a million answers stay compact.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_anthropix.api.lines import BlockSplitter, line_blocks
from airflow_provider_anthropix.cost.pricing import ModelPrice, PriceTable, UnknownModelPrice, model_price
from airflow_provider_anthropix.table.schema import Checker, answer_fields, arrow_type, arrow_value, compile_checker
from airflow_provider_anthropix.table.typed import typed_values

if TYPE_CHECKING:
    import pyarrow

INVALID_OUTPUT = "invalid_output"
#: The columns every output row has after the input's and the answer's, in this order.
META_COLUMNS = (
    "_custom_id",
    "_result_type",
    "_error",
    "_stop_reason",
    "_answer_text",
    "_input_tokens",
    "_output_tokens",
    "_cost_usd",
    "_batch_id",
)
#: The answer column without a schema.
TEXT_COLUMN = "answer"
#: Answers turned into Arrow arrays at a time: their Python objects (a few kB each) are what the reader holds.
_SLICE = 8_192
#: Longest error text kept per row (the server's messages are not ours to store whole).
_ERROR_CHARS = 500


class _Block(msgspec.Struct, gc=False):
    type: str = ""
    text: str | None = None


class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = 0
    output_tokens: int | None = 0
    cache_creation_input_tokens: int | None = 0
    cache_read_input_tokens: int | None = 0


class _Message(msgspec.Struct, gc=False):
    model: str = ""
    content: list[_Block] = []
    stop_reason: str | None = None
    usage: _Usage | None = None


class _ErrorBody(msgspec.Struct, gc=False):
    type: str = ""
    message: str = ""


class _ErrorEnvelope(msgspec.Struct, gc=False):
    error: _ErrorBody | None = None


class _Result(msgspec.Struct, gc=False):
    type: str = ""
    message: _Message | None = None
    error: _ErrorEnvelope | None = None


class _Line(msgspec.Struct, gc=False):
    custom_id: str
    result: _Result


_LINE = msgspec.json.Decoder(_Line)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a block of answers is parsed.

    Parsing makes many small lists and dicts (the answers' values) that live until their slice
    is turned into Arrow; each few hundred of them start a collection, and in a task process
    (Airflow's objects, the DAG) the older generations' collections walk millions of objects:
    in a ``dags test`` run they made the parsing several times slower. What is parsed holds no
    reference cycles, so nothing is left for the collector meanwhile; it runs again after.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_JSON = msgspec.json.Decoder()


def parse_answer(checker: Checker, text: str, stop: str | None) -> tuple[Any, str | None]:
    """An answer's JSON value, or why it does not hold to the schema (``checker``)."""
    if stop == "refusal":
        return None, f"refusal: {text[:200]}"
    if stop == "max_tokens":
        return None, "max_tokens: the answer was cut before its JSON ended"
    try:
        value = _JSON.decode(text)
    except msgspec.DecodeError as exc:
        return None, f"not JSON: {exc}"[:_ERROR_CHARS]
    problem = checker(value, "$")
    if problem is not None:
        return None, f"schema: {problem}"[:_ERROR_CHARS]
    return value, None


class InvalidOutputs:
    """Finds the succeeded answers that break the schema in a results stream as it passes by (no second read).

    :meth:`watch` hands the chunks on unchanged; once they have all passed, :attr:`found` holds
    the custom_ids of the answers a retry round should send again.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.checker = compile_checker(schema)
        self.typed = typed_values(schema)
        self.found: set[str] = set()

    def watch(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        splitter = BlockSplitter()
        for chunk in chunks:
            for piece in splitter.feed(chunk):
                self._piece(piece)
            yield chunk
        tail = splitter.finish()
        if tail.strip():
            self._piece(tail)

    def _piece(self, piece: bytes | memoryview) -> None:
        with _gc_paused():
            self._check(piece)

    def _check(self, piece: bytes | memoryview) -> None:
        typed = self.typed
        for line in _LINE.decode_lines(bytes(piece)):
            message = line.result.message
            if line.result.type != "succeeded" or message is None:
                continue
            text = "".join(b.text for b in message.content if b.type == "text" and b.text is not None)
            stop = message.stop_reason
            if typed is not None and stop != "refusal" and stop != "max_tokens":
                try:
                    typed(text)
                    continue  # holds to the schema
                except msgspec.DecodeError:
                    pass
            if parse_answer(self.checker, text, stop)[1] is not None:
                self.found.add(line.custom_id)


@dataclass(frozen=True)
class AnswerLayout:
    """The answer's columns: their names (with ``answer_prefix``), Arrow types, and the schema's checker."""

    schema: Mapping[str, Any] | None
    prefix: str = ""

    @property
    def names(self) -> list[str]:
        if self.schema is None:
            return [self.prefix + TEXT_COLUMN]
        return [self.prefix + name for name, _ in answer_fields(self.schema)]

    def arrow_fields(self) -> list[pyarrow.Field]:
        import pyarrow as pa

        if self.schema is None:
            return [pa.field(self.prefix + TEXT_COLUMN, pa.string())]
        return [
            pa.field(self.prefix + name, arrow_type(node, self.schema)) for name, node in answer_fields(self.schema)
        ]


def check_column_names(input_columns: Iterable[str], layout: AnswerLayout) -> None:
    """Refuse an answer column or a ``_`` column that an input column already names (before anything is paid)."""
    from airflow_provider_anthropix.table.source import TableError

    taken = set(input_columns)
    clash = sorted(taken & set(layout.names))
    if clash:
        raise TableError(
            f"the answer's column(s) {clash} are input columns too; pass answer_prefix (e.g. 'answer_') "
            "to name the answer's columns apart; nothing was sent"
        )
    reserved = sorted(taken & set(META_COLUMNS))
    if reserved:
        raise TableError(
            f"input column(s) {reserved} clash with the output's own columns; rename them; nothing was sent"
        )


@dataclass
class AnswerCounts:
    """Outcomes, tokens and cost of the answers read."""

    counts: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_models: set[str] = field(default_factory=set)

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


class AnswerReader:
    """Turns result lines (per batch, the retried ones left out) into Arrow record batches of answers.

    With ``sink``, each record batch (up to 65,536 answers) is handed to it as soon as it is
    made and nothing is kept (the table export spills them); without, :meth:`finish` returns them
    all as one table.
    """

    def __init__(
        self,
        layout: AnswerLayout,
        *,
        price_table: PriceTable | None = None,
        redact: Callable[[str], str] = lambda text: text,
        sink: Callable[[pyarrow.RecordBatch], None] | None = None,
    ) -> None:
        from airflow_provider_anthropix.cost.pricing import DEFAULT_PRICE_TABLE

        self.layout = layout
        self.redact = redact
        self.table = DEFAULT_PRICE_TABLE if price_table is None else price_table
        self.checker = compile_checker(layout.schema) if layout.schema is not None else None
        self._typed = typed_values(layout.schema) if layout.schema is not None else None
        self.fields = answer_fields(layout.schema) if layout.schema is not None else []
        self._names = [name for name, _ in self.fields]
        self.totals = AnswerCounts()
        self._prices: dict[str, ModelPrice | None] = {}
        self._answers: list[list[Any]] = [[] for _ in layout.names]
        self._meta: list[list[Any]] = [[] for _ in META_COLUMNS]
        self._batches: list[pyarrow.RecordBatch] = []
        self._sink = sink
        #: Answers read so far (handed to ``sink`` or kept).
        self.rows = 0

    # -- reading ---------------------------------------------------------------------------

    def read(self, chunks: Iterable[bytes], *, batch_id: str, drop: Iterable[str] = ()) -> None:
        """Every line of one batch's results, except the custom_ids in ``drop`` (sent again later)."""
        dropped = drop if isinstance(drop, (set, frozenset)) else set(drop)
        for block in line_blocks(chunks):
            self._block(block, batch_id, dropped)

    def _block(self, block: bytes | memoryview, batch_id: str, drop: Any) -> None:
        with _gc_paused():
            lines = _LINE.decode_lines(bytes(block))
            for line in lines:
                if drop and line.custom_id in drop:
                    continue
                self._line(line, batch_id)
                if len(self._meta[0]) >= _SLICE:
                    self._flush()

    def _line(self, line: _Line, batch_id: str) -> None:
        result = line.result
        kind = result.type
        message = result.message
        text: str | None = None
        stop: str | None = None
        error: str | None = None
        values: list[Any] | None = None
        input_tokens = output_tokens = None
        cost: float | None = None
        if kind == "succeeded" and message is not None:
            content = message.content
            if len(content) == 1 and content[0].type == "text" and content[0].text is not None:
                text = content[0].text  # the usual answer: one text block
            else:
                text = "".join(b.text for b in content if b.type == "text" and b.text is not None)
            stop = message.stop_reason
            if message.usage is not None:
                input_tokens, output_tokens = message.usage.input_tokens or 0, message.usage.output_tokens or 0
                cost = self._cost(message.model, message.usage)
            values, error = self._parse(text, stop)
            if error is not None:
                kind = INVALID_OUTPUT
        elif kind == "errored":
            body = result.error.error if result.error is not None else None
            error = self.redact(f"{body.type}: {body.message}"[:_ERROR_CHARS]) if body is not None else "errored"
        self.totals.add(kind)
        self.totals.input_tokens += input_tokens or 0
        self.totals.output_tokens += output_tokens or 0
        self.totals.cost_usd += cost or 0.0
        if values:
            for column, value in zip(self._answers, values, strict=True):
                column.append(value)
        else:
            for column in self._answers:
                column.append(None)
        meta = self._meta  # in META_COLUMNS' order
        meta[0].append(line.custom_id)
        meta[1].append(kind)
        meta[2].append(error)
        meta[3].append(stop)
        meta[4].append(text)
        meta[5].append(input_tokens)
        meta[6].append(output_tokens)
        meta[7].append(cost)
        meta[8].append(batch_id)

    def _parse(self, text: str, stop: str | None) -> tuple[list[Any] | None, str | None]:
        """The answer's column values, or why it is ``invalid_output``."""
        if self.checker is None:
            return [text], None
        if self._typed is not None and stop != "refusal" and stop != "max_tokens":
            try:
                return self._typed(text), None  # decoded and checked in one go
            except msgspec.DecodeError:
                pass  # the plain decode and the checker say why (or find it valid after all)
        value, problem = parse_answer(self.checker, text, stop)
        if problem is not None:
            return None, self.redact(problem)
        return [value.get(name) for name in self._names], None

    def _cost(self, model: str, usage: _Usage) -> float | None:
        """What this answer cost at batch price (cache writes at the 5-minute price), or None for an unpriced model."""
        if model not in self._prices:
            try:
                self._prices[model] = model_price(model, self.table)
            except UnknownModelPrice:
                self._prices[model] = None
        prices = self._prices[model]
        if prices is None:
            self.totals.unpriced_models.add(model[:128])
            return None
        return (
            (usage.input_tokens or 0) * prices.input
            + (usage.output_tokens or 0) * prices.output
            + (usage.cache_creation_input_tokens or 0) * prices.cache_write_5m
            + (usage.cache_read_input_tokens or 0) * prices.cache_read
        )

    # -- columns -------------------------------------------------------------------------------

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._meta[0]:
            return
        schema = self.schema()
        columns = self._answers + self._meta
        arrays = [_array(values, f.type) for values, f in zip(columns, schema, strict=True)]
        batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
        self.rows += batch.num_rows
        if self._sink is not None:
            self._sink(batch)  # handed on: the reader keeps nothing
        else:
            self._batches.append(batch)
        self._answers = [[] for _ in self._answers]
        self._meta = [[] for _ in self._meta]

    def schema(self) -> pyarrow.Schema:
        return answer_schema(self.layout)

    def finish(self) -> pyarrow.Table:
        """Every answer read, as one table (in the order read; the join puts it in row order)."""
        import pyarrow as pa

        self._flush()
        return pa.Table.from_batches(self._batches, schema=self.schema())


def answer_schema(layout: AnswerLayout) -> pyarrow.Schema:
    """The answers' columns: the layout's (from the schema, or the text) then :data:`META_COLUMNS`."""
    import pyarrow as pa

    meta = [
        pa.field("_custom_id", pa.string()),
        pa.field("_result_type", pa.string()),
        pa.field("_error", pa.string()),
        pa.field("_stop_reason", pa.string()),
        pa.field("_answer_text", pa.string()),
        pa.field("_input_tokens", pa.int64()),
        pa.field("_output_tokens", pa.int64()),
        pa.field("_cost_usd", pa.float64()),
        pa.field("_batch_id", pa.string()),
    ]
    return pa.schema(layout.arrow_fields() + meta)


def _array(values: list[Any], kind: pyarrow.DataType) -> pyarrow.Array:
    """An Arrow array of ``values``; values that do not fit the type as they are get shaped first."""
    import pyarrow as pa

    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([arrow_value(v, kind) for v in values], type=kind)

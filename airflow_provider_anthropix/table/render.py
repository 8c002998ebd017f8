"""Rows to requests: the prompt and system templates rendered per row, each row named by a custom_id.

Templates are Jinja, rendered in a sandbox with ``StrictUndefined``: a row's columns are the
variables (``{{ review_text }}``; ``{{ row["odd name"] }}`` for any column), plus the task's
``prompt_vars``. A variable that is neither is refused before any row is rendered, naming it
and the columns there are. The operator does not hand ``prompt``/``system`` to Airflow's own
templating (they are not template fields), so ``{{ ds }}`` in a path and ``{{ title }}`` in a
prompt live side by side; task-level values reach a prompt through ``prompt_vars``, which is
templated.

Every custom_id is checked for duplicates as rows are rendered: a duplicate key is refused
before anything is written or sent, naming both rows.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.table.ids import RowKeyError, custom_id_for, position_id

if TYPE_CHECKING:
    import pyarrow

#: The variable holding the whole row, for columns whose names are not identifiers.
ROW_VARIABLE = "row"
#: Rows turned into Python objects and lines at a time (a slice is cut into such parts): a few MB however long the rows.
PART_ROWS = 4096


class RenderError(AnthropixError, ValueError):
    """A template or a row cannot make a request; says which row (position, key) and why."""


@dataclass(frozen=True)
class RowTemplates:
    """How a row becomes the params of one request."""

    prompt: str | None = None
    system: str | None = None
    build_request: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None
    prompt_vars: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.build_request is None):
            raise RenderError("give either prompt (a template) or build_request (a callable), not both or neither")
        if self.build_request is not None and self.system is not None:
            raise RenderError(
                "system is a template for prompt=; with build_request, put the system prompt in its params"
            )


@dataclass
class RenderSummary:
    """What the render wrote: rows, the input's columns, how many keys were derived."""

    rows: int = 0
    columns: list[str] = field(default_factory=list)
    derived_ids: int = 0


class RowRenderer:
    """Renders rows into ``{"custom_id", "params"}`` lines, checking templates and keys first."""

    def __init__(self, templates: RowTemplates, *, id_column: str | None) -> None:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import SandboxedEnvironment

        self.templates = templates
        self.id_column = id_column
        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self._env = env
        self._prompt = self._compile("prompt", templates.prompt)
        self._system = self._compile("system", templates.system)
        # Jinja's render() copies its globals into a new dict for every row; a row's variables are
        # laid over one copy made here instead (same names, same precedence: globals < prompt_vars < row).
        self._globals_and_vars: dict[str, Any] | None = (
            {**env.globals, **templates.prompt_vars}
            if all(isinstance(name, str) for name in templates.prompt_vars)
            else None  # render() refuses non-string names itself, with its own error
        )

    def _compile(self, what: str, source: str | None) -> Any:
        from jinja2 import TemplateSyntaxError

        if source is None:
            return None
        try:
            return self._env.from_string(source)
        except TemplateSyntaxError as exc:
            raise RenderError(f"{what} template, line {exc.lineno}: {exc.message}") from None

    def variables(self) -> set[str]:
        """Every variable the templates use."""
        from jinja2 import meta

        found: set[str] = set()
        for source in (self.templates.prompt, self.templates.system):
            if source is not None:
                found |= meta.find_undeclared_variables(self._env.parse(source))
        return found

    def check_columns(self, columns: Iterable[str]) -> list[str]:
        """Refuse variables that are neither columns nor prompt_vars; return the columns the templates read."""
        columns = list(columns)
        if self.id_column is not None and self.id_column not in columns:
            raise RenderError(f"id_column {self.id_column!r} is not a column of the table (columns: {columns})")
        if self.templates.build_request is not None:
            return columns
        used = self.variables()
        known = set(columns) | set(self.templates.prompt_vars) | set(self._env.globals) | {ROW_VARIABLE}
        unknown = sorted(used - known)
        if unknown:
            raise RenderError(
                f"the prompt/system template uses {', '.join(unknown)}, which is not a column of the table "
                f"nor a prompt_vars name (columns: {columns}); nothing was sent"
            )
        if ROW_VARIABLE in used:
            return columns
        return [c for c in columns if c in used]

    def render(self, slices: Iterable[pyarrow.RecordBatch], out: IO[bytes]) -> RenderSummary:
        """Write one request line per row of ``slices`` to ``out``, in row order.

        A row whose key an earlier row has is refused, naming both; the first failing row (its
        key, a duplicate, or its template) is the one reported. Keys are checked for duplicates
        as compact Arrow arrays once the rows are rendered (or when a row fails, among the rows
        before it), not held as a million Python strings; ``out`` is then to be discarded.
        """
        import msgspec

        encode = msgspec.json.Encoder().encode
        summary = RenderSummary()
        ids = _Ids()
        reading: list[str] | None = None
        position = 0
        for batch in slices:
            if reading is None:
                summary.columns = list(batch.schema.names)
                reading = self.check_columns(summary.columns)
            if self.id_column is not None:
                ids.keys.append(batch.column(self.id_column))
            for start in range(0, batch.num_rows, PART_ROWS):
                part = batch.slice(start, PART_ROWS)
                rows = part.select(reading).to_pylist() if reading else [{}] * part.num_rows
                keys = part.column(self.id_column).to_pylist() if self.id_column else None
                lines = []
                for offset, row in enumerate(rows):
                    key = keys[offset] if keys is not None else None
                    try:
                        custom_id = self._custom_id(key, position)
                    except RenderError:
                        ids.raise_first_duplicate(self.id_column)  # an earlier row's duplicate fails first
                        raise
                    if keys is not None and custom_id != key:
                        summary.derived_ids += 1
                    if keys is not None:  # positions are unique; keys need checking
                        ids.add(custom_id)
                    try:
                        params = self._params(row, position, key)
                    except RenderError:
                        ids.raise_first_duplicate(self.id_column)  # this row's own duplicate fails first
                        raise
                    lines.append(encode({"custom_id": custom_id, "params": params}))
                    position += 1
                out.write(b"\n".join(lines) + b"\n" if lines else b"")
        ids.raise_first_duplicate(self.id_column)
        summary.rows = position
        return summary

    def _custom_id(self, key: Any, position: int) -> str:
        if self.id_column is None:
            return position_id(position)
        try:
            return custom_id_for(key)
        except RowKeyError as exc:
            raise RenderError(f"row {position}: id_column {self.id_column!r}: {exc}") from None

    def _params(self, row: dict[str, Any], position: int, key: Any) -> dict[str, Any]:
        templates = self.templates
        try:
            if templates.build_request is not None:
                made = templates.build_request(row)
                if not isinstance(made, Mapping):
                    raise RenderError(
                        f"{self._where(position, key)}: build_request returned {type(made).__name__}, not a dict of params"
                    )
                params = dict(made)
            else:
                params = {"messages": [{"role": "user", "content": self._fill(self._prompt, row)}]}
                if self._system is not None:
                    params["system"] = self._fill(self._system, row)
        except RenderError:
            raise
        except Exception as exc:  # a template's or the user's callable's error, with the row it came from
            raise RenderError(f"{self._where(position, key)}: {type(exc).__name__}: {exc}; nothing was sent") from None
        return params

    def _where(self, position: int, key: Any) -> str:
        return f"row {position}" + (f" ({self.id_column}={key!r})" if self.id_column else "")

    def _fill(self, template: Any, row: dict[str, Any]) -> str:
        """``template.render(variables)``: the same text, the same exceptions, one dict per row."""
        base = self._globals_and_vars
        if base is None:
            return str(template.render({**self.templates.prompt_vars, **row, ROW_VARIABLE: row}))
        context = template.new_context({**base, **row, ROW_VARIABLE: row}, shared=True)
        try:
            return str(self._env.concat(template.root_render_func(context)))
        except Exception:
            self._env.handle_exception()  # re-raises, with the template's lines in the traceback, as render() does
            raise


class _Ids:
    """The custom_ids rendered so far, in row order, as Arrow strings; and the key column they came from."""

    def __init__(self) -> None:
        self.keys: list[pyarrow.Array] = []
        self._done: list[pyarrow.Array] = []
        self._pending: list[str] = []

    def add(self, custom_id: str) -> None:
        self._pending.append(custom_id)
        if len(self._pending) >= PART_ROWS:
            self._seal()

    def _seal(self) -> None:
        if self._pending:
            self._done.append(_string_array(self._pending))
            self._pending = []

    def raise_first_duplicate(self, id_column: str | None) -> None:
        """Raise for the first row (by position) whose custom_id an earlier row has, if there is one."""
        import pyarrow as pa
        import pyarrow.compute as pc

        self._seal()
        if not self._done:
            return
        ids = pa.chunked_array(self._done, type=pa.string()).combine_chunks()
        if len(ids) < 2:
            return
        order = pc.sort_indices(ids)  # stable: equal ids stay in row order, the first one first
        ordered = ids.take(order)
        same = pc.equal(ordered.slice(1), ordered.slice(0, len(ids) - 1))
        if not pc.any(same).as_py():
            return
        position = pc.min(order.slice(1).filter(same)).as_py()  # the first row that repeats an earlier one
        earlier = pc.index(ids, ids[position]).as_py()
        key = pa.chunked_array(self.keys)[position].as_py() if self.keys else None
        raise RenderError(
            f"row {position} has the same key as row {earlier} ({id_column}={key!r}): "
            "keys must be unique; nothing was sent"
        )


def _string_array(values: list[str]) -> pyarrow.Array:
    """``pa.array(values, pa.string())``, built from its two buffers.

    ``pa.array`` on a Python list imports pandas to ask whether the list is a pandas object: ~40
    MB of RSS for a task that never uses pandas. The buffers are what Arrow would build (a part's
    custom_ids are at most ``PART_ROWS`` x 64 bytes: 32-bit offsets hold them).
    """
    import pyarrow as pa

    encoded = [value.encode() for value in values]
    offsets = array("i", accumulate(map(len, encoded), initial=0))
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded)))

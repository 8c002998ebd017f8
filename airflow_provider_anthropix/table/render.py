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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.table.ids import RowKeyError, custom_id_for, position_id

if TYPE_CHECKING:
    import pyarrow

#: The variable holding the whole row, for columns whose names are not identifiers.
ROW_VARIABLE = "row"


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
        """Write one request line per row of ``slices`` to ``out``, in row order."""
        import msgspec

        encode = msgspec.json.Encoder().encode
        summary = RenderSummary()
        seen: dict[str, int] = {}
        reading: list[str] | None = None
        position = 0
        for batch in slices:
            if reading is None:
                summary.columns = list(batch.schema.names)
                reading = self.check_columns(summary.columns)
            rows = batch.select(reading).to_pylist() if reading else [{}] * batch.num_rows
            keys = batch.column(self.id_column).to_pylist() if self.id_column else None
            lines = []
            for offset, row in enumerate(rows):
                key = keys[offset] if keys is not None else None
                custom_id = self._custom_id(key, position)
                if keys is not None and custom_id != key:
                    summary.derived_ids += 1
                earlier = seen.setdefault(custom_id, position)
                if earlier != position:
                    raise RenderError(
                        f"row {position} has the same key as row {earlier} ({self.id_column}={key!r}): "
                        "keys must be unique; nothing was sent"
                    )
                params = self._params(row, position, key)
                lines.append(encode({"custom_id": custom_id, "params": params}))
                position += 1
            out.write(b"\n".join(lines) + b"\n" if lines else b"")
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
        where = f"row {position}" + (f" ({self.id_column}={key!r})" if self.id_column else "")
        templates = self.templates
        try:
            if templates.build_request is not None:
                made = templates.build_request(row)
                if not isinstance(made, Mapping):
                    raise RenderError(f"{where}: build_request returned {type(made).__name__}, not a dict of params")
                params = dict(made)
            else:
                variables = {**templates.prompt_vars, **row, ROW_VARIABLE: row}
                params = {"messages": [{"role": "user", "content": self._prompt.render(variables)}]}
                if self._system is not None:
                    params["system"] = self._system.render(variables)
        except RenderError:
            raise
        except Exception as exc:  # a template's or the user's callable's error, with the row it came from
            raise RenderError(f"{where}: {type(exc).__name__}: {exc}; nothing was sent") from None
        return params

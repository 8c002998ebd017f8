"""The table's row renderer and answer checker, on their own: which row is reported, and with which words.

The renderer checks keys for duplicates as Arrow arrays rather than a dict of every key, and
the checker builds a problem's path only for a value that fails; these pin what they report:
the first failing row (a duplicate, a bad key or a template error, whichever comes first)
across slices and parts, and each problem's path and wording.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pytest

from airflow_provider_anthropix.table.render import PART_ROWS, RenderError, RowRenderer, RowTemplates
from airflow_provider_anthropix.table.schema import compile_checker

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "topics": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "summary": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]},
    },
    "required": ["sentiment", "score"],
    "additionalProperties": False,
}


def render(table: pa.Table, prompt: str, *, slice_rows: int = 3, id_column: str | None = "id") -> bytes:
    renderer = RowRenderer(RowTemplates(prompt=prompt, prompt_vars={"v": "V"}), id_column=id_column)
    out = io.BytesIO()
    renderer.render(table.to_batches(max_chunksize=slice_rows), out)
    return out.getvalue()


def failure(table: pa.Table, prompt: str, **options: Any) -> str:
    with pytest.raises(RenderError) as raised:
        render(table, prompt, **options)
    return str(raised.value)


def test_lines_in_row_order_with_globals_prompt_vars_and_the_row() -> None:
    table = pa.table({"id": ["a", "b c", "d"], "text": ["one", "two", "three"]})
    lines = render(table, "{{ text }} {{ v }} {{ row['id'] }} {{ range(2) | list }}").splitlines()
    assert [line.split(b'"content":"')[1].split(b'"')[0] for line in lines] == [
        b"one V a [0, 1]",
        b"two V b c [0, 1]",
        b"three V d [0, 1]",
    ]
    assert lines[1].startswith(b'{"custom_id":"k-')  # "b c" is not a custom_id: derived


@pytest.mark.parametrize("slice_rows", [2, 1000])
def test_a_duplicate_names_both_rows_and_the_key_across_slices(slice_rows: int) -> None:
    keys = [f"k{i}" for i in range(10)]
    keys[7] = "k2"
    keys[9] = "k1"
    message = failure(pa.table({"id": keys, "text": ["x"] * 10}), "{{ text }}", slice_rows=slice_rows)
    assert message == "row 7 has the same key as row 2 (id='k2'): keys must be unique; nothing was sent"


def test_derived_keys_keep_their_own_value_in_the_message() -> None:
    message = failure(pa.table({"id": [5, 6, 5], "text": ["x"] * 3}), "{{ text }}")
    assert message.startswith("row 2 has the same key as row 0 (id=5)")


def test_a_duplicate_beyond_one_part_is_found() -> None:
    rows = PART_ROWS + 10
    keys = [f"k{i}" for i in range(rows)]
    keys[-1] = "k3"
    message = failure(pa.table({"id": keys, "text": ["x"] * rows}), "{{ text }}", slice_rows=rows)
    assert message.startswith(f"row {rows - 1} has the same key as row 3 (id='k3')")


def test_the_first_failing_row_is_reported() -> None:
    prompt = "{% if bad %}{{ 1 / 0 }}{% endif %}{{ text }}"
    keys = ["a", "b", "a", "c", "d"]
    bad_after = pa.table({"id": keys, "text": ["x"] * 5, "bad": [False, False, False, True, False]})
    assert failure(bad_after, prompt).startswith("row 2 has the same key as row 0")
    bad_on_it = pa.table({"id": keys, "text": ["x"] * 5, "bad": [False, False, True, False, False]})
    assert failure(bad_on_it, prompt).startswith("row 2 has the same key as row 0")  # its key is checked first
    bad_before = pa.table({"id": keys, "text": ["x"] * 5, "bad": [False, True, False, False, False]})
    assert failure(bad_before, prompt) == "row 1 (id='b'): ZeroDivisionError: division by zero; nothing was sent"
    null_after = pa.table({"id": ["a", "b", "a", None], "text": ["x"] * 4})
    assert failure(null_after, "{{ text }}").startswith("row 2 has the same key as row 0")
    null_before = pa.table({"id": ["a", None, "a"], "text": ["x"] * 3})
    assert failure(null_before, "{{ text }}") == "row 1: id_column 'id': the key is null"


def test_template_errors_keep_their_type_and_message() -> None:
    table = pa.table({"id": ["a"], "text": ["x"]})
    assert failure(table, "{{ text.__class__.__mro__ }}").startswith("row 0 (id='a'): SecurityError: ")
    assert failure(table, "{{ text }}{{ row['nope'] }}").startswith("row 0 (id='a'): UndefinedError: ")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"sentiment": "positive", "score": 3, "topics": ["a"], "summary": None}, None),
        ({"sentiment": "positive", "score": 3.0}, None),  # an integral float is an integer, as before
        ({"score": 3}, "$.sentiment is missing (required)"),
        ({"sentiment": "happy", "score": 3}, "$.sentiment is not one of ['positive', 'neutral', 'negative']"),
        ({"sentiment": "neutral", "score": 11}, "$.score is above 10"),
        ({"sentiment": "neutral", "score": True}, "$.score is boolean, expected integer"),
        ({"sentiment": "neutral", "score": 2, "topics": ["a", 7]}, "$.topics[1] is integer, expected string"),
        ({"sentiment": "neutral", "score": 2, "topics": ["a"] * 4}, "$.topics has 4 item(s), more than 3"),
        ({"sentiment": "neutral", "score": 2, "summary": "too long"}, "$.summary is longer than 5"),
        ({"sentiment": "neutral", "score": 2, "more": 1}, "$.more is not allowed (additionalProperties: false)"),
        ([], "$ is array, expected object"),
    ],
)
def test_checker_problems_name_the_path(value: Any, problem: str | None) -> None:
    assert compile_checker(SCHEMA)(value, "$") == problem


NO_PANDAS = """
import io, sys
import pyarrow.csv
from airflow_provider_anthropix.table.render import RowRenderer, RowTemplates

table = pyarrow.csv.read_csv(io.BytesIO(b"id,text\\na,x\\nb c,y\\na,z\\n"))  # pa.table() would load pandas itself
print("pandas" in sys.modules)
try:
    RowRenderer(RowTemplates(prompt="{{ text }}"), id_column="id").render(table.to_batches(), io.BytesIO())
except ValueError as exc:
    print(str(exc).split(":")[0])
print("pandas" in sys.modules)
"""


def test_the_key_check_does_not_load_pandas() -> None:
    # pa.array() on a list imports pandas (~40 MB of RSS) to ask whether the list is a pandas object.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", NO_PANDAS], capture_output=True, text=True, timeout=240, check=True)
    assert done.stdout.splitlines() == ["False", "row 2 has the same key as row 0 (id='a')", "False"]


def test_the_key_arrays_hold_any_text() -> None:
    from airflow_provider_anthropix.table.render import _string_array

    values = ["", "plain", "ünïcødé", "k-" + "0" * 40, "x" * 70]
    built = _string_array(values)
    built.validate(full=True)
    assert built.equals(pa.array(values, pa.string()))

"""The rendered requests, byte for byte: how the table is read must never change what is sent.

The reader's options (which columns, how many rows a slice holds, buffering) and the renderer's
bookkeeping are tuned for memory; none of that may change a single byte of ``requests.jsonl``.
These digests were taken from the renderer as it was before that tuning, on tables that cross
row groups, slices and render parts, with valid and derived keys, a system template, prompt
variables, ``row[...]`` and columns the templates do not use.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.table.render import RowRenderer, RowTemplates
from airflow_provider_anthropix.table.source import SLICE_BYTES, iter_slices, table_files

ROWS = 10_000


def _table() -> pa.Table:
    keys: list[object] = [f"r{i:05d}" if i % 7 else f"key {i} ünï" for i in range(ROWS)]
    return pa.table(
        {
            "id": pa.array(keys, pa.string()),
            "text": pa.array([f"review {i} " + "word " * (i % 13) + '"quoted"\n\ttab' for i in range(ROWS)]),
            "stars": pa.array([i % 5 for i in range(ROWS)], pa.int64()),
            "unused": pa.array(["x" * (i % 200) for i in range(ROWS)]),
            "odd name": pa.array([i * 0.5 for i in range(ROWS)]),
        }
    )


def _render(path: Path, templates: RowTemplates, id_column: str | None, max_bytes: int | None = SLICE_BYTES) -> str:
    out = io.BytesIO()
    files = table_files(ObjectStoragePath(f"file://{path}"))
    summary = RowRenderer(templates, id_column=id_column).render(iter_slices(files, max_bytes=max_bytes), out)
    assert summary.rows == ROWS
    assert summary.columns == ["id", "text", "stars", "unused", "odd name"]
    return hashlib.sha256(out.getvalue()).hexdigest()


TEMPLATES = RowTemplates(
    prompt="{{ day }}: {{ text }} ({{ stars }} stars, {{ row['odd name'] }})",
    system="You triage reviews for {{ shop }}.",
    prompt_vars={"day": "2026-01-01", "shop": "Ünï & co"},
)

#: sha256 of requests.jsonl, rendered before the reader was tuned for memory.
WITH_IDS = "1394ed50765211475629dc9fc6de86da8eef8b4c852c5ad70f5e8ecd2f960f04"
BY_POSITION = "1fc73807e75ff2aa3ddc44abe251506427b66bc78574fb7aa26ac48e36bb6504"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    table = _table()
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=3_000)
    (tmp_path / "csv").mkdir()
    pacsv.write_csv(table.slice(0, 6_000), tmp_path / "csv" / "a.csv")
    pacsv.write_csv(table.slice(6_000), tmp_path / "csv" / "b.csv")
    with open(tmp_path / "rows.jsonl", "w", encoding="utf-8") as fh:
        for row in table.to_pylist():
            fh.write(json.dumps(row) + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "id_column", "templates", "digest"),
    [
        ("rows.parquet", "id", TEMPLATES, WITH_IDS),
        ("rows.parquet", None, RowTemplates(prompt="{{ text }}"), BY_POSITION),
        ("rows.parquet", "stars", RowTemplates(prompt="{{ text }}"), None),  # duplicate keys: refused
        ("csv", "id", TEMPLATES, WITH_IDS),
        ("rows.jsonl", "id", TEMPLATES, WITH_IDS),  # the same rows from any format: the same bytes
    ],
)
def test_requests_are_byte_identical_to_the_pinned_render(
    folder: Path, name: str, id_column: str | None, templates: RowTemplates, digest: str | None
) -> None:
    if digest is None:
        with pytest.raises(ValueError, match="row 5 has the same key as row 0"):
            _render(folder / name, templates, id_column)
        return
    assert _render(folder / name, templates, id_column) == digest


@pytest.mark.parametrize("max_bytes", [None, 64 << 10, 1])
def test_the_slicing_does_not_change_a_byte(folder: Path, max_bytes: int | None) -> None:
    assert _render(folder / "rows.parquet", TEMPLATES, "id", max_bytes) == WITH_IDS


def test_build_request_sees_every_column(folder: Path) -> None:
    seen: list[list[str]] = []

    def build(row: dict[str, object]) -> dict[str, object]:
        if not seen:
            seen.append(sorted(row))
        return {"messages": [{"role": "user", "content": str(row["text"])}]}

    _render(folder / "rows.parquet", RowTemplates(build_request=build), "id")
    assert seen == [["id", "odd name", "stars", "text", "unused"]]

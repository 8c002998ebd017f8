"""The table export's join (``table/join.py`` through ``TableWorkspace``'s export): spilled answers back in row order.

The output is compared with an oracle written the plain way (every answer in one table, each
row's custom_id derived in Python and looked up in a dict), for every outcome and every kind of
key, across several position buckets (``bucket_rows=4``) and two input files, answers arriving
shuffled over two batches, one of them retried. Each refusal leaves nothing published and no
file in the join's temporary folder; so do a success and a stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api.models import RequestCounts
from airflow_provider_anthropix.api.plan import PlanOptions
from airflow_provider_anthropix.io.export import ExportOptions
from airflow_provider_anthropix.io.shards import fingerprint_inputs
from airflow_provider_anthropix.table import answers as answers_module
from airflow_provider_anthropix.table.answers import AnswerLayout, AnswerReader, answer_schema
from airflow_provider_anthropix.table.ids import custom_id_for, position_id
from airflow_provider_anthropix.table.join import AnswerSpill, custom_ids_of, input_custom_ids
from airflow_provider_anthropix.table.source import TableError
from airflow_provider_anthropix.table.workspace import TableWorkspace

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "topics": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "detail": {"type": "object", "properties": {"ok": {"type": "boolean"}, "weight": {"type": "number"}}},
    },
    "required": ["sentiment", "score"],
    "additionalProperties": False,
}
KEYS: dict[str, Any] = {
    "strings": ["plain", "with space", "ünïcødé", "x" * 90, "a/b?c", "k_1-2", "", "tab\there"],
    "integers": [0, -5, 2**40, 7, 12, 99, 1000, 3],
    "positions": None,
}
ROWS = 23  # in two files of 13 and 10 rows; buckets of 4 rows


def outcome_line(custom_id: str, i: int) -> dict[str, Any]:
    """Every outcome by turns: valid answers, answers breaking the schema, refusals, errors, expiries, cancels."""
    usage = {"input_tokens": 10 + i, "output_tokens": 5 + i}
    kind = i % 7

    def message(text: str, stop: str = "end_turn") -> dict[str, Any]:
        return {
            "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop,
            "usage": usage,
        }

    if kind in (0, 1):
        answer = {
            "sentiment": ["positive", "neutral", "negative"][i % 3],
            "score": 1 + i % 10,
            "topics": ["a", "ü"][: i % 3],
        }
        if kind == 1:
            answer["detail"] = {"ok": i % 2 == 0, "weight": i / 4}
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message(json.dumps(answer))}}
    if kind == 2:
        return {
            "custom_id": custom_id,
            "result": {"type": "succeeded", "message": message('{"sentiment": "meh", "score": 3}')},
        }
    if kind == 3:
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message("I can't help.", "refusal")}}
    if kind == 4:
        error = {"type": "error", "error": {"type": "invalid_request_error", "message": f"bad {i}"}}
        return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
    return {"custom_id": custom_id, "result": {"type": "expired" if kind == 5 else "canceled"}}


def encode(lines: list[dict[str, Any]]) -> list[bytes]:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return [data[i : i + 700] for i in range(0, len(data), 700)]  # chunks cut mid-line


class Job:
    """An input table in two Parquet files, its answers over two batches, and a TableWorkspace to export them."""

    def __init__(self, tmp: Path, kind: str) -> None:
        rng = random.Random(kind)
        keys = KEYS[kind]
        self.id_column = None if keys is None else "key"
        columns: dict[str, Any] = {
            "text": [f"row {i} ✓" for i in range(ROWS)],
            "stars": pa.array([i % 5 if i % 4 else None for i in range(ROWS)], pa.int64()),
        }
        if keys is not None:
            columns["key"] = [
                k if i < len(keys) else (f"key-{i}" if kind == "strings" else 10_000 + i)
                for i, k in enumerate(keys + [None] * (ROWS - len(keys)))
            ]
        self.table = pa.table(columns)
        self.input = tmp / "input"
        self.input.mkdir()
        pq.write_table(self.table.slice(0, 13), self.input / "part-a.parquet")
        pq.write_table(self.table.slice(13), self.input / "part-b.parquet")
        keys_in_order = self.table.column("key").to_pylist() if keys is not None else list(range(ROWS))
        self.ids = [custom_id_for(k) if keys is not None else position_id(k) for k in keys_in_order]
        lines = [outcome_line(custom_id, i) for i, custom_id in enumerate(self.ids)]
        rng.shuffle(lines)
        # Row 4 (errored) and row 6 (canceled) were sent again: batch 1's lines for them are dropped, batch 2's kept.
        retried = {self.ids[4], self.ids[6]}
        lines = [line for line in lines if line["custom_id"] not in retried]
        failed = {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": "x"}}}
        first = lines[:13] + [{"custom_id": c, "result": failed} for c in sorted(retried)]
        second = lines[13:] + [outcome_line(c, 0) for c in sorted(retried)]
        self.batches = [("msgbatch_1", first, retried), ("msgbatch_2", second, set())]
        self.spill = tmp / "spill"
        self.spill.mkdir()
        self.out = tmp / "out"
        self.fingerprint = fingerprint_inputs([ObjectStoragePath(f"file://{p}") for p in sorted(self.input.iterdir())])
        self.tmp = tmp

    def workspace(self, **changes: Any) -> TableWorkspace:
        args: dict[str, Any] = {
            "table_path": ObjectStoragePath(f"file://{self.input}"),
            "id_column": self.id_column,
            "layout": AnswerLayout(SCHEMA),
            "retry_invalid_output": False,
            "price_table": None,
            "redact": lambda text: text,
            "table_manifest": {"input_fingerprint": self.fingerprint},
            "bucket_rows": 4,
            "spill_parent": str(self.spill),
            "requests_path": ObjectStoragePath(f"file://{self.tmp}/requests.jsonl"),
            "destination": ObjectStoragePath(f"file://{self.out}"),
            "plan": PlanOptions(),
            "export_options": ExportOptions(),
        }
        args.update(changes)
        return TableWorkspace(ObjectStoragePath(f"file://{self.tmp}/work"), **args)

    def export(
        self, batches: list[tuple[str, list[dict[str, Any]], set[str]]] | None = None, total: int = ROWS, **changes: Any
    ) -> dict[str, Any]:
        batches = self.batches if batches is None else batches
        sources = [SimpleNamespace(batch_id=batch_id) for batch_id, _, _ in batches]
        streams = [(encode(lines), drop) for _, lines, drop in batches]
        return self.workspace(**changes)._export_once(streams, sources, RequestCounts(succeeded=total), {})

    def expected(self) -> pa.Table:
        """The plain join: every answer in memory, each row's custom_id looked up in a dict."""
        reader = AnswerReader(AnswerLayout(SCHEMA))
        for batch_id, lines, drop in self.batches:
            reader.read(encode(lines), batch_id=batch_id, drop=drop)
        answers = reader.finish()
        where = {custom_id: i for i, custom_id in enumerate(answers.column("_custom_id").to_pylist())}
        taken = answers.take(pa.array([where[c] for c in self.ids]))
        columns = list(self.table.columns) + list(taken.columns)
        return pa.Table.from_arrays(columns, names=self.table.column_names + taken.column_names)

    def nothing_left(self) -> None:
        assert not (self.out / "_manifest.json").exists()
        assert not list(self.out.glob("part-*.parquet")) if self.out.exists() else True
        assert list(self.spill.iterdir()) == []
        assert not [name for name in open_files() if name.startswith(str(self.spill))]  # none left open either


@pytest.mark.parametrize("kind", list(KEYS))
def test_the_join_equals_the_plain_join_for_every_outcome_and_key(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(answers_module, "_SLICE", 5)  # answers spilled 5 at a time, each slice over several buckets
    job = Job(tmp_path, kind)
    summary = job.export()
    published = ds.dataset(job.out, format="parquet").to_table()
    expected = job.expected()
    assert published.schema.names == expected.schema.names
    assert published.equals(expected.cast(published.schema))
    assert published.schema.field("score").type == pa.int64()
    assert published.column("_custom_id").to_pylist() == job.ids
    assert summary["counts"] == {"succeeded": 10, "invalid_output": 6, "errored": 2, "expired": 3, "canceled": 2}
    assert summary["rows"] == ROWS
    assert list(job.spill.iterdir()) == []  # the temporary folder is gone after a success too


def open_files() -> list[str]:
    names = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
    return names


def drop_line(job: Job, custom_id: str) -> list[tuple[str, list[dict[str, Any]], set[str]]]:
    return [(b, [line for line in lines if line["custom_id"] != custom_id], drop) for b, lines, drop in job.batches]


def test_an_answer_for_no_row_is_refused(tmp_path: Path) -> None:
    job = Job(tmp_path, "strings")
    batches = drop_line(job, job.ids[9])
    batches[1][1].append(outcome_line("stranger", 0))
    with pytest.raises(TableError, match="answer for stranger, which no row of the table has"):
        job.export(batches)
    job.nothing_left()


def test_a_duplicate_answer_is_refused(tmp_path: Path) -> None:
    job = Job(tmp_path, "strings")
    batches = drop_line(job, job.ids[16])
    batches[1][1].append(outcome_line(job.ids[17], 1))  # the counts add up, but row 17 is answered twice
    with pytest.raises(TableError, match=r"key-17 \(row 17\) has more than one answer"):
        job.export(batches)
    job.nothing_left()


def test_fewer_answers_than_requests_are_refused(tmp_path: Path) -> None:
    job = Job(tmp_path, "positions")
    with pytest.raises(TableError, match="hold 22 answers for 23 requests"):
        job.export(drop_line(job, job.ids[9]))
    job.nothing_left()


def test_more_rows_than_the_job_answered_are_refused(tmp_path: Path) -> None:
    job = Job(tmp_path, "integers")
    with pytest.raises(TableError, match="the table has 23 rows but the job answered 22"):
        job.export(drop_line(job, job.ids[22]), total=22)
    job.nothing_left()


def test_an_input_changed_since_the_render_is_refused(tmp_path: Path) -> None:
    job = Job(tmp_path, "strings")
    pq.write_table(job.table.slice(13, 9), job.input / "part-b.parquet")
    with pytest.raises(TableError, match="changed since its rows were sent"):
        job.export()
    job.nothing_left()


def test_an_input_changed_while_it_is_joined_is_refused_before_publishing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = Job(tmp_path, "strings")
    import airflow_provider_anthropix.table.workspace as workspace

    read = workspace.iter_slices

    def other_rows(files: Any, **options: Any) -> Any:  # the second read of the input gives rows 0 and 1 swapped
        for batch in read(files, **options):
            yield batch.take(pa.array([1, 0, *range(2, batch.num_rows)]))

    monkeypatch.setattr(workspace, "iter_slices", other_rows)
    with pytest.raises(TableError, match="not the rows read a moment ago"):
        job.export()
    job.nothing_left()


@pytest.mark.parametrize("after", [2, 5])
def test_a_stop_publishes_nothing_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    """Stopped while answers are spilled (after 2 polls) or while the table is written (after 5: answers are spilled in 5 parts)."""
    monkeypatch.setattr(answers_module, "_SLICE", 5)
    job = Job(tmp_path, "strings")
    polls = iter(range(100))
    with pytest.raises(TableError, match="stopped"):
        job.export(should_stop=lambda: next(polls) >= after)
    job.nothing_left()


def test_a_failure_while_answers_are_read_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(answers_module, "_SLICE", 5)  # batch 1's answers are spilled before batch 2 breaks
    job = Job(tmp_path, "strings")
    batches = list(job.batches)
    broken = encode(batches[1][1])
    broken.insert(1, b"\n{not json\n")
    workspace = job.workspace()
    sources = [SimpleNamespace(batch_id="msgbatch_1"), SimpleNamespace(batch_id="msgbatch_2")]
    streams = [(encode(batches[0][1]), batches[0][2]), (broken, set())]
    with pytest.raises(msgspec.DecodeError):
        workspace._export_once(streams, sources, RequestCounts(succeeded=ROWS), {})
    job.nothing_left()


# -- the spill on its own --------------------------------------------------------------------------


def spill_of(tmp_path: Path, ids: list[str], bucket_rows: int = 2) -> AnswerSpill:
    return AnswerSpill(
        pa.array(ids, pa.string()), answer_schema(AnswerLayout(None)), str(tmp_path), bucket_rows=bucket_rows
    )


def answers(ids: list[str]) -> pa.RecordBatch:
    schema = answer_schema(AnswerLayout(None))
    columns = {name: [None] * len(ids) for name in schema.names}
    columns["_custom_id"] = ids
    columns["answer"] = [f"to {i}" for i in ids]
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def test_a_row_without_an_answer_is_named_before_anything_is_written(tmp_path: Path) -> None:
    spill = spill_of(tmp_path, ["a", "b", "c", "d", "e"])
    spill.add(answers(["e", "a", "b", "d"]))
    spill.close()
    with pytest.raises(TableError, match=r"c \(row 2\) has no answer"):
        spill.check_counts()


def test_a_row_without_an_answer_is_named_when_its_bucket_is_loaded(tmp_path: Path) -> None:
    # The counts add up (d is answered twice, c not at all): the bucket's positions give it away.
    spill = spill_of(tmp_path, ["a", "b", "c", "d", "e"], bucket_rows=5)
    spill.add(answers(["e", "a", "d", "b", "d"]))
    spill.close()
    spill.check_counts()
    with pytest.raises(TableError, match=r"d \(row 3\) has more than one answer"):
        list(spill.joined([pa.record_batch({"k": list("abcde")})], "k"))


def test_the_spill_gives_answers_in_row_order_across_buckets_and_slices(tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(11)]
    spill = spill_of(tmp_path, ids, bucket_rows=3)
    shuffled = list(ids)
    random.Random(3).shuffle(shuffled)
    spill.add(answers(shuffled[:6]))
    spill.add(answers(shuffled[6:]))
    spill.close()
    spill.check_counts()
    slices = [pa.record_batch({"k": pa.array(ids[a:b], pa.string())}) for a, b in ((0, 1), (1, 5), (5, 5), (5, 11))]
    joined = pa.Table.from_batches(list(spill.joined(slices, "k")))
    assert joined.column("_custom_id").to_pylist() == ids
    assert joined.column("answer").to_pylist() == [f"to {i}" for i in ids]
    assert joined.column_names[0] == "k" and "_position" not in joined.column_names


def test_custom_ids_match_the_renders_one_by_one(tmp_path: Path) -> None:
    keys = ["ok", "not ok", "x" * 64, "x" * 65, "é", "a-b_c", "", "line\n"]
    batch = pa.record_batch({"k": keys, "n": list(range(len(keys)))})
    assert custom_ids_of(batch, "k", 0).to_pylist() == [custom_id_for(k) for k in keys]
    assert custom_ids_of(batch, "n", 0).to_pylist() == [custom_id_for(n) for n in range(len(keys))]
    assert custom_ids_of(batch, None, 40).to_pylist() == [position_id(40 + i) for i in range(len(keys))]
    large = pa.record_batch({"k": pa.array(keys, pa.large_string())})
    assert custom_ids_of(large, "k", 0).to_pylist() == [custom_id_for(k) for k in keys]
    assert input_custom_ids([batch.slice(0, 3), batch.slice(3)], None).to_pylist() == [
        position_id(i) for i in range(len(keys))
    ]

"""BatchTableOperator in real DAG runs (``dag.test()``, SQLite, the emulator): rows in, typed answer columns out.

The emulator answers ``output_config.format`` requests with JSON valid against the schema, and its
markers in a row's text make a refusal, a ``max_tokens`` cut, a schema violation, or a violation
on the first attempt only (fixed by a retry round).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle
from tests.support.airflow import DAG_OPEN, load_dag_source, load_example_dag, states

HEADER = """
import json
from typing import Literal

import pendulum
from airflow.sdk import DAG, task
from pydantic import BaseModel

from airflow_provider_anthropix.operators.table import BatchTableOperator

DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 400}


class Triage(BaseModel):
    sentiment: Literal["positive", "neutral", "negative"]
    score: int
    topics: list[str]
    summary: str


@task
def record(path, value):
    with open(path, "w") as fh:
        json.dump(value, fh)

"""

REFUSE, CUT, BREAK, BREAK_ONCE = (
    "[[emulator:refusal]]",
    "[[emulator:max-tokens]]",
    "[[emulator:schema-invalid]]",
    "[[emulator:schema-invalid-once]]",
)


def read_output(folder: Path) -> pa.Table:
    return ds.dataset(folder, format="parquet").to_table()


def run_table(dags: Path, dag_id: str, args: str, summary: Path | None = None) -> Any:
    record = f"\n            record({str(summary)!r}, t.output)" if summary else ""
    dag = load_dag_source(
        dags,
        dag_id,
        HEADER,
        f"""
        {DAG_OPEN}
            t = BatchTableOperator(task_id="t", default_params=DEFAULTS, max_requests_per_batch=10,
                                   poll_interval=0.2, deferrable=True, max_errored_ratio=None, {args}){record}
        """,
    )
    return dag.test()


def test_rows_come_back_in_order_with_typed_answers_and_invalid_outputs_named(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    keys = ["plain", "with space", "ünïcødé", "x" * 90, "a/b?c", *[f"k{i}" for i in range(20)]]
    texts = [f"review number {i}" for i in range(len(keys))]
    texts[5] += f" {REFUSE}"
    texts[6] += f" {CUT}"
    texts[7] += f" {BREAK}"
    texts[8] += f" {BREAK_ONCE}"
    pq.write_table(pa.table({"ticket": keys, "text": texts, "stars": list(range(len(keys)))}), tmp_path / "in.parquet")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    before = emulator.stats()["batches_created"]
    run = run_table(
        airflow_dags,
        "table_main",
        f"table_path={str(tmp_path / 'in.parquet')!r}, destination={str(out)!r}, id_column='ticket', "
        "prompt='Triage this review: {{ text }} ({{ stars }} stars)', system='You triage reviews for {{ row[\"ticket\"] }}.', "
        "output_schema=Triage, retry_invalid_output=True, max_retry_rounds=1",
        summary,
    )
    assert states(run) == {"t": "success", "record": "success"}
    table = read_output(out)
    assert table.column("ticket").to_pylist() == keys  # every row once, in input order, original keys
    assert table.column("stars").to_pylist() == list(range(len(keys)))
    assert table.schema.field("score").type == pa.int64()
    assert table.schema.field("topics").type == pa.list_(pa.string())
    assert table.schema.field("sentiment").type == pa.string()
    rows = table.to_pylist()
    kinds = {row["ticket"]: row["_result_type"] for row in rows}
    assert kinds["k10"] == "succeeded"
    assert [kinds[k] for k in keys[5:8]] == ["invalid_output"] * 3
    assert rows[5]["_error"].startswith("refusal")
    assert rows[6]["_error"].startswith("max_tokens")
    assert rows[7]["_error"].startswith(("schema", "not JSON"))
    assert rows[5]["sentiment"] is None and rows[5]["_answer_text"]
    fixed = rows[8]  # invalid on its first attempt, sent again by the retry round
    assert fixed["_result_type"] == "succeeded" and fixed["sentiment"] in ("positive", "neutral", "negative")
    first_round = {row["_batch_id"] for row in rows[:5]}
    assert fixed["_batch_id"] not in first_round
    for row in rows:
        if row["_result_type"] == "succeeded":
            assert row["sentiment"] in ("positive", "neutral", "negative")
            assert isinstance(row["score"], int) and isinstance(row["topics"], list) and isinstance(row["summary"], str)
            assert row["_input_tokens"] > 0 and row["_cost_usd"] > 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["counts"] == {"succeeded": 22, "invalid_output": 3, "errored": 0, "expired": 0, "canceled": 0}
    assert manifest["rows"] == len(keys) and manifest["kind"] == "anthropix-table"
    xcom = json.loads(summary.read_text())
    assert xcom["counts"]["invalid_output"] == 3 and xcom["rows"] == len(keys)
    # 25 rows in batches of 10, then one retry batch for the four invalid answers.
    assert emulator.stats()["batches_created"] - before == 4
    assert not (out / "_anthropix_table" / "requests.jsonl").exists()  # the rendered rows do not outlive the job


def test_integer_keys_from_csv_and_text_answers_without_a_schema(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text("id,title\n" + "".join(f"{i * 1000},title {i}\n" for i in range(12)))
    out = tmp_path / "out"
    run = run_table(
        airflow_dags,
        "table_csv",
        f"table_path={str(tmp_path / 'in.csv')!r}, destination={str(out)!r}, id_column='id', prompt='Say: {{{{ title }}}}'",
    )
    assert states(run) == {"t": "success"}
    table = read_output(out)
    assert table.column("id").to_pylist() == [i * 1000 for i in range(12)]
    assert table.column("_custom_id").to_pylist()[0].startswith("k-")  # an integer is not a custom_id: derived
    assert all(text.startswith("Emulated reply to: Say: title") for text in table.column("answer").to_pylist())


@pytest.mark.parametrize(
    ("case", "args", "error"),
    [
        ("dup", "id_column='ticket', prompt='{{ text }}'", "same key as row"),
        ("undefined", "id_column='ticket', prompt='{{ body }}'", "uses body"),
        (
            "clash",
            "id_column='ticket', prompt='{{ text }}', output_schema={'type': 'object', 'properties': {'text': {'type': 'string'}}}",
            "answer_prefix",
        ),
    ],
)
def test_bad_rows_and_templates_are_refused_before_any_batch(
    airflow_dags: Path,
    emulator: EmulatorHandle,
    anthropix_conn_env: str,
    tmp_path: Path,
    case: str,
    args: str,
    error: str,
    capsys: Any,
) -> None:
    pq.write_table(pa.table({"ticket": ["a", "b", "a"], "text": ["one", "two", "three"]}), tmp_path / "in.parquet")
    before = emulator.stats()["batches_created"]
    run = run_table(
        airflow_dags,
        f"table_bad_{case}",
        f"table_path={str(tmp_path / 'in.parquet')!r}, destination={str(tmp_path / 'out')!r}, {args}",
    )
    assert states(run) == {"t": "failed"}
    assert error in capsys.readouterr().out
    assert emulator.stats()["batches_created"] == before
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_dry_run_budget_and_rerun_identity(
    airflow_dags: Path,
    emulator: EmulatorHandle,
    anthropix_conn_env: str,
    tmp_path: Path,
    capsys: Any,
) -> None:
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(15)]}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    common = f"table_path={str(tmp_path / 'in.parquet')!r}, destination={str(out)!r}, prompt='{{{{ text }}}}', output_schema=Triage"
    before = emulator.stats()["batches_created"]
    summary = tmp_path / "dry.json"
    assert states(run_table(airflow_dags, "table_dry", f"{common}, dry_run=True", summary)) == {
        "t": "success",
        "record": "success",
    }
    assert json.loads(summary.read_text())["dry_run"] is True
    assert emulator.stats()["batches_created"] == before
    assert not (out / "_manifest.json").exists()
    assert not list((out / "_anthropix_table").glob("*dry-run*"))

    assert states(run_table(airflow_dags, "table_budget", f"{common}, max_cost_usd=0.000001")) == {"t": "failed"}
    assert "max_cost_usd" in capsys.readouterr().out
    assert emulator.stats()["batches_created"] == before

    assert states(run_table(airflow_dags, "table_real", common)) == {"t": "success"}
    first = emulator.stats()["batches_created"]
    assert first - before == 2
    parts = {p.name: p.read_bytes() for p in out.glob("part-*.parquet")}
    assert read_output(out).column("text").to_pylist() == [f"row {i}" for i in range(15)]
    # The same DAG run again (a re-run for the same date): the same job, no new batch, the same table.
    assert states(run_table(airflow_dags, "table_real", common)) == {"t": "success"}
    assert emulator.stats()["batches_created"] == first
    assert read_output(out).column("_custom_id").to_pylist() == [f"row-{i}" for i in range(15)]
    assert {p.name for p in out.glob("part-*.parquet")} == set(parts)


def test_the_example_review_triage_dag_runs_offline(
    airflow_dags: Path,
    emulator: EmulatorHandle,
    anthropix_conn_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = tmp_path / "output"
    monkeypatch.setenv("ANTHROPIX_TABLE_OUTPUT", output.as_uri())
    monkeypatch.setenv("ANTHROPIX_TABLE_POLL_INTERVAL", "0.2")
    monkeypatch.setenv("ANTHROPIX_TABLE_ROWS", "40")
    run = load_example_dag(airflow_dags, "review_triage.py").test()
    assert set(states(run).values()) == {"success"}, states(run)
    (manifest,) = output.rglob("_manifest.json")
    table = read_output(manifest.parent)
    assert table.num_rows == 40
    assert table.column("review_id").to_pylist() == [
        f"R-{n:06d}/{p}"
        for n, p in zip(range(40), ["kettle", "headphones", "desk lamp", "backpack", "coffee grinder"] * 8, strict=True)
    ]
    kinds = table.column("_result_type").to_pylist()
    assert kinds[3] == "invalid_output" and kinds[7] == "succeeded"  # the refusal stays; the once-invalid is retried
    assert kinds.count("succeeded") == 39
    assert table.schema.field("score").type == pa.int64()


def test_rows_with_system_blocks_tools_an_image_and_a_schema_and_the_model_check(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path, capsys: Any
) -> None:
    """build_request makes the requests users send (cached system blocks, tools, an image) beside the schema."""
    pq.write_table(
        pa.table({"sku": [f"s{i}" for i in range(6)], "note": [f"note {i}" for i in range(6)]}), tmp_path / "in.parquet"
    )
    out = tmp_path / "out"
    header_extra = (
        "from tests.support.request_shapes import DEFAULT_SYSTEM_BLOCKS, DEFAULT_TOOLS, IMAGE_MAGIC, b64\n"
        "def build(row):\n"
        "    image = {'type': 'image', 'source': {'type': 'base64', 'media_type': 'image/png',"
        " 'data': b64(IMAGE_MAGIC['image/png'] + b'0' * 64)}}\n"
        "    return {'system': DEFAULT_SYSTEM_BLOCKS, 'tools': DEFAULT_TOOLS, 'tool_choice': {'type': 'auto'},\n"
        "            'messages': [{'role': 'user', 'content': [image, {'type': 'text', 'text': row['note']}]}]}\n"
    )
    before = emulator.stats()["batches_created"]
    dag = load_dag_source(
        airflow_dags,
        "table_shapes",
        HEADER + header_extra,
        f"""
        {DAG_OPEN}
            BatchTableOperator(task_id="t", table_path={str(tmp_path / "in.parquet")!r}, destination={str(out)!r},
                               id_column="sku", build_request=build, output_schema=Triage, default_params=DEFAULTS,
                               poll_interval=0.2, deferrable=True, max_errored_ratio=None)
            BatchTableOperator(task_id="unknown_model", table_path={str(tmp_path / "in.parquet")!r},
                               destination={str(tmp_path / "out2")!r}, prompt="{{{{ note }}}}",
                               default_params={{"model": "claude-nonexistent-9", "max_tokens": 50}},
                               poll_interval=0.2, deferrable=True)
        """,
    )
    assert states(dag.test()) == {"t": "success", "unknown_model": "failed"}
    table = read_output(out)
    assert table.column("sku").to_pylist() == [f"s{i}" for i in range(6)]
    assert set(table.column("_result_type").to_pylist()) == {"succeeded"}
    assert all(s in ("positive", "neutral", "negative") for s in table.column("sentiment").to_pylist())
    assert emulator.stats()["batches_created"] - before == 1  # the unknown model was refused before sending
    assert "claude-nonexistent-9" in capsys.readouterr().out


def test_a_table_job_that_waits_in_the_worker(
    airflow_dags: Path, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    # deferrable=False: the task hands its memory back, then polls in the worker until its batches end.
    pq.write_table(
        pa.table({"k": [f"k{i}" for i in range(5)], "text": [f"t{i}" for i in range(5)]}), tmp_path / "in.parquet"
    )
    out = tmp_path / "out"
    dag = load_dag_source(
        airflow_dags,
        "table_in_worker",
        HEADER,
        f"""
        {DAG_OPEN}
            BatchTableOperator(task_id="t", table_path={str(tmp_path / "in.parquet")!r}, destination={str(out)!r},
                               id_column="k", prompt="Say {{{{ text }}}}", default_params=DEFAULTS,
                               poll_interval=0.2, deferrable=False)
        """,
    )
    assert states(dag.test()) == {"t": "success"}
    table = read_output(out)
    assert table.column("k").to_pylist() == [f"k{i}" for i in range(5)]
    assert set(table.column("_result_type").to_pylist()) == {"succeeded"}

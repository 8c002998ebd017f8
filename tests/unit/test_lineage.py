"""Lineage: dataset names by the OpenLineage conventions, the run's facts, the OpenLineage objects, and the
promise that none of it is needed (or imported) unless Airflow's OpenLineage listener asks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_anthropix.lineage import LineageDataset, RunFacts, dataset_name, operator_lineage
from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.operators.job import BatchJobOperator

pytestmark = pytest.mark.smoke


@pytest.mark.parametrize(
    ("uri", "account", "expected"),
    [
        ("file:///data/run/results/", None, ("file", "/data/run/results")),
        ("/data/run/requests.jsonl.gz", None, ("file", "/data/run/requests.jsonl.gz")),
        ("file://nas/data/x", None, ("file://nas", "/data/x")),
        ("file://localhost/data/x", None, ("file", "/data/x")),
        ("s3://bucket/prefix/results", None, ("s3://bucket", "prefix/results")),
        ("s3a://bucket/k", None, ("s3://bucket", "k")),
        ("s3://aws_conn@bucket/k/", None, ("s3://bucket", "k")),
        ("s3://bucket", None, ("s3://bucket", "/")),
        ("gs://bucket/a/b", None, ("gs://bucket", "a/b")),
        ("gcs://bucket/a", None, ("gs://bucket", "a")),
        ("abfs://container/a/b", "acct", ("abfss://container@acct.dfs.core.windows.net", "a/b")),
        ("abfss://container@acct.dfs.core.windows.net/a", None, ("abfss://container@acct.dfs.core.windows.net", "a")),
        ("abfs://container/a", None, ("abfss://container", "a")),
        ("wasbs://container/a", "acct", ("wasbs://container@acct.blob.core.windows.net", "a")),
        ("hdfs://namenode:8020/a/b", None, ("hdfs://namenode:8020", "/a/b")),
    ],
)
def test_dataset_names_follow_the_openlineage_conventions(
    uri: str, account: str | None, expected: tuple[str, str]
) -> None:
    assert dataset_name(uri, azure_account=account) == expected


def test_facts_of_a_results_manifest_and_of_a_table_manifest() -> None:
    facts = RunFacts()
    facts.add_manifest(
        {
            "batch_id": "job of 2 batch(es)",
            "counts": {"succeeded": 5, "errored": 1},
            "tokens": {"input": 7, "output": 9},
            "actual": {"cost_usd": 0.4},
            "estimate": {"expected_cost_usd": 0.5, "worst_case_cost_usd": 1.0, "most_expensive": [{"custom_id": "x"}]},
            "files": [{"size": 10}, {"size": 5}],
            "duration_seconds": 1.5,
            "lines": 6,
            "job": {"batch_list": [{"batch_id": "msgbatch_a"}, {"batch_id": "msgbatch_b"}], "batches": 2, "rounds": 2},
        },
        "s3://b/out/_manifest.json",
    )
    assert facts.facet_fields() == {
        "batchIds": ["msgbatch_a", "msgbatch_b"],
        "requests": 6,
        "requestCounts": {"succeeded": 5, "errored": 1},
        "tokens": {"input": 7, "output": 9},
        "estimatedCostUsd": 0.5,
        "worstCaseCostUsd": 1.0,
        "actualCostUsd": 0.4,
        "estimateError": 0.25,
        "batches": 2,
        "retryRounds": 1,
        "rows": 6,
        "exportBytes": 15,
        "exportSeconds": 1.5,
        "manifest": "s3://b/out/_manifest.json",
    }
    table = RunFacts()
    table.add_manifest(
        {"kind": "anthropix-table", "cost_usd": 0.2, "files": [{"bytes": 99}], "export_seconds": 0.3, "rows": 4}
    )
    assert (table.actual_cost_usd, table.export_bytes, table.export_seconds, table.rows) == (0.2, 99, 0.3, 4)
    assert table.estimate_error is None
    # Whatever the manifest holds, only figures reach the facet: no request, no custom_id list.
    assert "most_expensive" not in json.dumps(facts.facet_fields())


def test_operator_lineage_builds_datasets_schema_and_the_run_facet() -> None:
    pytest.importorskip("airflow.providers.openlineage")
    from openlineage.client.serde import Serde

    facts = RunFacts(batch_ids=["msgbatch_1"], counts={"succeeded": 2}, actual_cost_usd=0.01)
    lineage = operator_lineage(
        [LineageDataset("file", "/in/requests.jsonl")],
        [LineageDataset("s3://b", "out", fields=[("custom_id", "string"), ("input_tokens", "int64")], rows=2, bytes=9)],
        facts,
    )
    [source] = lineage.inputs
    [target] = lineage.outputs
    assert (source.namespace, source.name, target.namespace, target.name) == (
        "file",
        "/in/requests.jsonl",
        "s3://b",
        "out",
    )
    event = json.loads(Serde.to_json(target))
    columns = [(f["name"], f["type"], f["ordinal_position"]) for f in event["facets"]["schema"]["fields"]]
    assert columns == [("custom_id", "string", 1), ("input_tokens", "int64", 2)]
    assert event["outputFacets"]["outputStatistics"]["rowCount"] == 2
    facet = json.loads(Serde.to_json(lineage.run_facets["anthropix_batch"]))
    assert facet["batchIds"] == ["msgbatch_1"]
    assert facet["requestCounts"] == {"succeeded": 2}
    assert facet["_producer"]


def test_operators_name_their_inputs_and_outputs() -> None:
    pytest.importorskip("airflow.providers.openlineage")
    create = CreateBatchOperator(
        task_id="c", requests_path="s3://bucket/in/requests.jsonl", results_destination="s3://bucket/out"
    )
    start = create.get_openlineage_facets_on_start()
    assert [(d.namespace, d.name) for d in start.inputs] == [("s3://bucket", "in/requests.jsonl")]
    assert [(d.namespace, d.name) for d in start.outputs] == [("s3://bucket", "out")]
    assert start.run_facets == {}
    inline = CreateBatchOperator(task_id="i", requests=[{"custom_id": "a", "params": {}}])
    assert inline.get_openlineage_facets_on_start().inputs == []
    fetch = FetchBatchResultsOperator(task_id="f", batch_id="msgbatch_1", destination="/data/out", format="parquet")
    fetch.observed.add_batch("msgbatch_1")
    failed = fetch.get_openlineage_facets_on_failure(None)
    [output] = failed.outputs
    assert (output.namespace, output.name) == ("file", "/data/out")
    assert [f.name for f in output.facets["schema"].fields][:2] == ["custom_id", "result_type"]
    assert failed.run_facets["anthropix_batch"].batchIds == ["msgbatch_1"]
    templated = BatchJobOperator(task_id="j", requests_path="{{ params.x }}", destination="/data/job")
    assert templated.get_openlineage_facets_on_start().inputs == []  # not rendered: left out


def test_nothing_needs_openlineage_unless_the_listener_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the OpenLineage packages a task records its facts as always; only the listener's call would import them."""
    blocked = ("openlineage", "airflow.providers.openlineage")
    for name in [m for m in sys.modules if m.startswith(blocked)] + list(blocked):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr("airflow_provider_anthropix.lineage._RUN_FACET_CLASS", None)
    fetch = FetchBatchResultsOperator(task_id="f", batch_id="msgbatch_1", destination="/data/out")
    fetch._observe_export({"batch_id": "msgbatch_1", "counts": {"succeeded": 1}, "files": []})
    assert fetch.observed.batch_ids == ["msgbatch_1"]
    with pytest.raises(ImportError):
        fetch.get_openlineage_facets_on_complete(None)


PROBE = textwrap.dedent(
    """
    import json, sys
    import airflow.sdk
    before = set(sys.modules)
    import airflow_provider_anthropix.operators.create, airflow_provider_anthropix.operators.fetch
    import airflow_provider_anthropix.operators.job, airflow_provider_anthropix.operators.table
    import airflow_provider_anthropix.triggers.job
    print(json.dumps(sorted(set(sys.modules) - before)))
    """
)


def test_a_dag_file_imports_no_lineage_or_metrics_module() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    unwanted = ("openlineage", "airflow.providers.openlineage", "statsd", "airflow_provider_anthropix.lineage")
    assert [m for m in loaded if m.startswith(unwanted) or m == "airflow_provider_anthropix.metrics"] == []
    assert "airflow_provider_anthropix.operators.observe" in loaded


def test_a_table_names_the_columns_it_published(tmp_path: Path) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_provider_anthropix.operators.table import BatchTableOperator

    table = BatchTableOperator(
        task_id="t", table_path=str(tmp_path / "in.parquet"), destination=str(tmp_path / "out"), prompt="{{ title }}"
    )
    assert table.get_openlineage_facets_on_start().outputs[0].facets == {}  # nothing published yet
    (tmp_path / "out").mkdir()
    published = pa.table({"title": ["a"], "sentiment": ["good"], "_input_tokens": pa.array([3], pa.int64())})
    pq.write_table(published, tmp_path / "out" / "part-00000.parquet")
    complete = table.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in complete.inputs] == [("file", str(tmp_path / "in.parquet"))]
    [output] = complete.outputs
    assert [(f.name, f.type) for f in output.facets["schema"].fields] == [
        ("title", "string"),
        ("sentiment", "string"),
        ("_input_tokens", "int64"),
    ]

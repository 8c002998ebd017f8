"""TableWorkspace's round end: the answers that break the schema are found in the same pass that keeps the results.

With ``retry_invalid_output`` the round end used to scan a batch's results (keeping a copy) and
then read the copy again to check each answer against the schema; now one pass does both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api.plan import PlanOptions
from airflow_provider_anthropix.io.export import ExportOptions
from airflow_provider_anthropix.table.answers import AnswerLayout
from airflow_provider_anthropix.table.workspace import TableWorkspace

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["a", "b"]}, "n": {"type": "integer"}},
    "required": ["label"],
    "additionalProperties": False,
}


def line(custom_id: str, text: str, stop: str = "end_turn") -> dict[str, Any]:
    message = {"model": "claude-haiku-4-5", "content": [{"type": "text", "text": text}], "stop_reason": stop}
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def workspace(tmp_path: Path, retry_invalid_output: bool) -> TableWorkspace:
    return TableWorkspace(
        ObjectStoragePath(f"file://{tmp_path}/work"),
        table_path=ObjectStoragePath(f"file://{tmp_path}/in.parquet"),
        id_column=None,
        layout=AnswerLayout(SCHEMA),
        retry_invalid_output=retry_invalid_output,
        price_table=None,
        redact=lambda text: text,
        table_manifest={},
        requests_path=ObjectStoragePath(f"file://{tmp_path}/requests.jsonl"),
        destination=ObjectStoragePath(f"file://{tmp_path}/out"),
        plan=PlanOptions(),
        export_options=ExportOptions(),
    )


@pytest.mark.parametrize("retry_invalid_output", [True, False])
def test_the_round_end_finds_invalid_answers_in_the_pass_that_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retry_invalid_output: bool
) -> None:
    lines = [
        line("ok-1", '{"label": "a", "n": 1}'),
        line("enum", '{"label": "c"}'),
        line("ok-2", '{"label": "b", "n": 2.0}'),  # valid to the checker (an integral float), not to the typed decode
        line("cut", '{"label": "a"', "max_tokens"),
        line("refused", '{"label": "a"}', "refusal"),
        {"custom_id": "err", "result": {"type": "errored", "error": {"type": "error", "error": {"type": "api_error"}}}},
        {
            "custom_id": "bad-req",
            "result": {"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error"}}},
        },
        line("extra", '{"label": "a", "x": 1}'),
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode()  # the last line without its newline
    chunks = [data[i : i + 50] for i in range(0, len(data), 50)]  # lines cut across chunks
    job = workspace(tmp_path, retry_invalid_output)

    def no_second_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the kept results were read again")

    monkeypatch.setattr(job, "iter_file", no_second_read)
    monkeypatch.setattr(job, "open_read", no_second_read)
    scan = job.scan_for_retries("msgbatch_1", chunks, retry_error_types={"api_error"}, retry_expired=False)
    invalid = {"enum", "cut", "refused", "extra"} if retry_invalid_output else set()
    assert scan.ids == {"err"} | invalid
    assert scan.counts == {"errored": 1, **({"succeeded": 4} if retry_invalid_output else {})}
    assert (tmp_path / "work" / "results" / "msgbatch_1.jsonl").read_bytes() == data  # kept whole, as it came

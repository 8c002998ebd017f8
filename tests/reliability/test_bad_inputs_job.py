"""The bad-input corpus's request files through BatchJobOperator and SplitRequestsOperator.

Same rule as for the create: a bad file fails without retries, naming file, line and
custom_id, with nothing sent to the API and no file left in the destination (no shard,
no journal, no results).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.operators.job import BatchJobOperator
from airflow_provider_anthropix.operators.split import SplitRequestsOperator
from tests.support.paths import DATA

REQUEST_FILES = DATA / "bad_inputs" / "requests"
EXPECT: dict[str, dict[str, Any]] = json.loads((REQUEST_FILES / "EXPECT.json").read_text())
#: Where a job words a problem differently from a single create.
JOB_WORDING = {"the batch has no requests": "the input has no requests"}


def _context() -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="bad_inputs", task_id="job", run_id="manual__1", map_index=-1)
    return {"ti": ti}


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.mark.parametrize("operator", ["job", "split"])
@pytest.mark.parametrize("name", sorted(EXPECT))
def test_request_file_is_refused_before_anything_is_sent_or_written(
    name: str, operator: str, emulator: EmulatorHandle, anthropix_conn_env: str, emulator_api_key: str, tmp_path: Path
) -> None:
    case = EXPECT[name]
    path = REQUEST_FILES / name
    destination = tmp_path / "out"
    before = dict(emulator.stats()["calls"])
    op: Any
    if operator == "job":
        op = BatchJobOperator(
            task_id="job",
            requests_path=str(path),
            destination=str(destination),
            default_params=case["default_params"],
            max_requests_per_batch=2,
        )
    else:
        op = SplitRequestsOperator(
            task_id="split",
            requests_path=str(path),
            destination=str(destination),
            default_params=case["default_params"],
            max_requests_per_batch=2,
        )
    with pytest.raises(AirflowFailException) as info:
        op.execute(_context())
    message = str(info.value)
    for text in case["expect"]:
        text = JOB_WORDING.get(text, text)
        assert text in message, f"{text!r} not in:\n{message}"
    if case.get("line"):
        assert f"{path}:{case['line']}" in message
    else:
        assert str(path) in message
    if case.get("custom_id"):
        assert f"custom_id {case['custom_id']}" in message
    assert emulator_api_key not in message
    assert dict(emulator.stats()["calls"]) == before, "a bad request file reached the API"
    assert _files_under(destination) == [], "a refused input left files behind"

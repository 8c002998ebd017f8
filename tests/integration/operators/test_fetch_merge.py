"""FetchBatchResultsOperator with several batch ids: one merged result set, every custom_id once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator


def make_batch(ids: list[str]) -> str:
    params = {"model": "claude-haiku-4-5", "max_tokens": 8}
    requests = [{"custom_id": i, "params": {**params, "messages": [{"role": "user", "content": i}]}} for i in ids]
    return AnthropixHook().create_batch(requests).id


def test_several_batches_land_as_one_result_set(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    first, second = make_batch(["a-1", "a-2"]), make_batch(["b-1"])
    emulator.advance(60)
    out = tmp_path / "out"
    summary = FetchBatchResultsOperator(task_id="f", batch_id=[first, second], destination=str(out)).execute({})
    assert summary["batch_ids"] == [first, second] and summary["lines"] == 3
    lines = (out / "results.jsonl").read_bytes().splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["a-1", "a-2", "b-1"]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [b["batch_id"] for b in manifest["batches"]] == [first, second]
    assert manifest["expected_counts"]["succeeded"] == 3


def test_a_list_rendered_as_text_is_accepted(emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path) -> None:
    first, second = make_batch(["t-1"]), make_batch(["t-2"])
    emulator.advance(60)
    text = str([first, second])  # how a list XCom renders in a non-native template
    summary = FetchBatchResultsOperator(task_id="f", batch_id=text, destination=str(tmp_path / "o")).execute({})
    assert summary["lines"] == 2


def test_a_custom_id_in_two_batches_fails_and_publishes_nothing(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    first, second = make_batch(["same", "x-1"]), make_batch(["same"])
    emulator.advance(60)
    out = tmp_path / "out"
    with pytest.raises(AirflowFailException, match="repeat an earlier custom_id"):
        FetchBatchResultsOperator(task_id="f", batch_id=[first, second], destination=str(out)).execute({})
    assert not (out / "_manifest.json").exists() and not (out / "results.jsonl").exists()


@pytest.mark.parametrize("value", ["", [], ["a", ""], ["a", "a"], "[not a list"])
def test_unusable_batch_id_lists_fail_clearly(value: object, anthropix_conn_env: str, tmp_path: Path) -> None:
    op = FetchBatchResultsOperator(task_id="f", batch_id=value, destination=str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(AirflowFailException, match="batch_id"):
        op.execute({})

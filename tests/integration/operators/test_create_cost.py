"""The estimate, budget gate, dry run and model check of CreateBatchOperator against the emulator."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.io.summary import Summariser
from airflow_provider_anthropix.operators.create import CreateBatchOperator

MODEL = "claude-sonnet-4-5"


class FakeTI:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = json.loads(json.dumps(value))


def write_requests(
    path: Path, n: int, *, max_tokens: int = 64, seed: int = 7, lengths: tuple[int, ...] = (3, 30, 300, 1200)
) -> Path:
    rng = random.Random(seed)
    with path.open("w") as fh:
        for i in range(n):
            text = " ".join("word" for _ in range(rng.choice(lengths)))
            params = {"max_tokens": max_tokens, "messages": [{"role": "user", "content": f"q{i} {text}"}]}
            fh.write(json.dumps({"custom_id": f"r{i}", "params": params}) + "\n")
    return path


def run(op: CreateBatchOperator) -> tuple[Any, FakeTI]:
    ti = FakeTI()
    return op.execute({"ti": ti}), ti  # type: ignore[arg-type]


def creates(emulator: EmulatorHandle) -> int:
    stats = emulator.stats()
    return int(stats["calls"].get("create", 0)) + int(stats["batches_created"])


def usage(n_batch: str) -> Summariser:
    summary = Summariser()
    hook = AnthropixHook()
    summary.feed_block(b"".join(hook.iter_result_bytes(n_batch)))
    return summary


def test_a_budget_below_the_worst_case_fails_before_any_batch(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    path = write_requests(tmp_path / "r.jsonl", 200, max_tokens=8192)
    op = CreateBatchOperator(
        task_id="c", requests_path=str(path), default_params={"model": MODEL}, max_cost_usd="0.50", retries=3
    )
    with pytest.raises(AirflowFailException) as info:
        run(op)
    text = str(info.value)
    assert "over budget: the worst case cost $" in text and "max_cost_usd $0.5000" in text
    assert "nothing was sent" in text and f"{path}:" in text and "max_tokens 8,192" in text
    assert creates(emulator) == 0


def test_dry_run_sends_nothing_and_pushes_the_estimate(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    path = write_requests(tmp_path / "r.jsonl", 30)
    op = CreateBatchOperator(task_id="c", requests_path=str(path), default_params={"model": MODEL}, dry_run=True)
    with pytest.raises(AirflowSkipException, match="nothing was sent"):
        run(op)
    assert creates(emulator) == 0


def test_an_unknown_model_fails_at_submit_with_close_matches(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    path = write_requests(tmp_path / "r.jsonl", 5)
    op = CreateBatchOperator(
        task_id="c", requests_path=str(path), default_params={"model": "claude-sonet-4-5-20250929"}
    )
    with pytest.raises(AirflowFailException, match=r"unknown model.*did you mean 'claude-sonnet-4-5-20250929'"):
        run(op)
    assert creates(emulator) == 0


def _wait_and_summarise(emulator: EmulatorHandle, batch_id: str) -> Summariser:
    hook = AnthropixHook()
    for _ in range(600):
        if hook.get_batch(batch_id).is_ended:
            break
        time.sleep(0.05)
    return usage(batch_id)


@pytest.mark.parametrize("n", [10, 1_000])
def test_the_estimate_is_within_its_bound_of_the_actual_usage(
    n: int, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    path = write_requests(tmp_path / "r.jsonl", n, seed=n)
    op = CreateBatchOperator(task_id="c", requests_path=str(path), default_params={"model": MODEL})
    batch_id, ti = run(op)
    estimate = ti.pushed["estimate"]
    actual = _wait_and_summarise(emulator, batch_id).tokens
    assert estimate["requests"] == n and estimate["sampled"] == min(n, 50)
    assert abs(estimate["input_tokens"] - actual.input) <= estimate["input_tokens_bound"]
    assert (estimate["input_tokens_bound"] == 0) == (n <= 50)
    assert actual.output <= estimate["output_tokens_worst_case"]


def test_the_estimate_holds_its_bound_at_100000_requests(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    """The sampled estimate (50 counted of 100,000 of mixed lengths) against what the batch really used."""
    path = write_requests(tmp_path / "r.jsonl", 100_000, seed=3, lengths=(3, 30, 120, 400))
    op = CreateBatchOperator(task_id="c", requests_path=str(path), default_params={"model": MODEL})
    batch_id, ti = run(op)
    estimate = ti.pushed["estimate"]
    actual = _wait_and_summarise(emulator, batch_id).tokens
    assert estimate["requests"] == 100_000 and estimate["sampled"] == 50
    assert 0 < estimate["input_tokens_bound"] < estimate["input_tokens"]
    assert abs(estimate["input_tokens"] - actual.input) <= estimate["input_tokens_bound"]


def test_the_fetch_reconciles_the_create_estimate_in_its_manifest(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator

    path = write_requests(tmp_path / "r.jsonl", 300, seed=11)
    batch_id, ti = run(CreateBatchOperator(task_id="c", requests_path=str(path), default_params={"model": MODEL}))
    emulator.advance(3600)
    out = tmp_path / "out"
    # As a non-native template renders the XCom: the dict's text.
    FetchBatchResultsOperator(
        task_id="f", batch_id=batch_id, destination=str(out), estimate=str(ti.pushed["estimate"])
    ).execute({})
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["estimate"]["input_tokens"] == ti.pushed["estimate"]["input_tokens"]
    assert manifest["estimate_error"]["input_tokens_within_bound"] is True
    assert manifest["actual"]["input_tokens"] > 0


def test_cache_accounting_matches_the_emulator(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    system = [{"type": "text", "text": "shared context " * 600, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    path = write_requests(tmp_path / "r.jsonl", 40)
    op = CreateBatchOperator(task_id="c", requests_path=str(path), default_params={"model": MODEL, "system": system})
    batch_id, ti = run(op)
    estimate = ti.pushed["estimate"]
    actual = _wait_and_summarise(emulator, batch_id).tokens
    assert actual.cache_creation_input > 0 and actual.cache_read_input == 39 * actual.cache_creation_input
    # The prefix is counted as (prefix + probe) - probe: at most one token of rounding per request.
    assert abs(estimate["cache_creation_input_tokens"] - actual.cache_creation_input) <= 1
    assert abs(estimate["cache_read_input_tokens"] - actual.cache_read_input) <= 39
    assert abs(estimate["input_tokens"] - actual.input) <= 40

"""The cost estimate without a server: extrapolation and its bound, cache prefix, gate, model check, prices, learning."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.cost.estimate import (
    BudgetExceeded,
    CostError,
    CostTally,
    UnknownModelError,
    check_budget,
    check_models,
    estimate_cost,
    parse_budget,
    shared_prefix,
)
from airflow_provider_anthropix.cost.pricing import UnknownModelPrice, model_price, validate_price_table
from airflow_provider_anthropix.io.estimate_inputs import learned_output_ratios

MODEL = "claude-sonnet-4-5"


def prices(model: str) -> Any:
    return model_price(model)


def fake_tokens(params: Any) -> int:
    """A deterministic 'tokenizer': ~4 characters a token plus an overhead."""
    text = "".join(m["content"] for m in params["messages"])
    system = params.get("system")
    if isinstance(system, list):
        text += "".join(b["text"] for b in system)
    return len(text) // 4 + 7


def requests(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": MODEL,
                "max_tokens": 100 + i % 7,
                "messages": [{"role": "user", "content": "w" * rng.choice([20, 200, 2000, 8000])}],
            },
        }
        for i in range(n)
    ]


def tally_of(reqs: list[dict[str, Any]], sample: int = 50, prefix_keys: tuple[str, ...] = ()) -> CostTally:
    tally = CostTally(sample, prices=prices)
    for i, r in enumerate(reqs):
        size = len(json.dumps(r))
        tally.observe(
            r["custom_id"],
            r["params"]["model"],
            r["params"]["max_tokens"],
            size,
            f"f.jsonl:{i + 1}",
            r["params"],
            shares_prefix=bool(prefix_keys),
        )
    return tally


def true_tokens(reqs: list[dict[str, Any]]) -> int:
    return sum(fake_tokens(r["params"]) for r in reqs)


def test_a_small_batch_is_counted_whole_with_no_bound() -> None:
    reqs = requests(10)
    calls: list[Any] = []
    estimate = estimate_cost(tally_of(reqs), lambda p: calls.append(p) or fake_tokens(p), prices)
    assert len(calls) == 10
    figures = estimate.to_dict()
    assert figures["input_tokens"] == true_tokens(reqs) and figures["input_tokens_bound"] == 0
    assert figures["output_tokens_worst_case"] == sum(r["params"]["max_tokens"] for r in reqs)
    assert figures["sampled"] == 10


@pytest.mark.parametrize("n", [1_000, 20_000])
def test_extrapolation_is_within_its_stated_bound(n: int) -> None:
    reqs = requests(n, seed=n)
    counted: list[int] = []
    estimate = estimate_cost(tally_of(reqs), lambda p: counted.append(1) or fake_tokens(p), prices)
    figures = estimate.to_dict()
    assert len(counted) == 50, "only the sample is counted"
    assert 0 < figures["input_tokens_bound"] < 0.2 * figures["input_tokens"]
    assert abs(figures["input_tokens"] - true_tokens(reqs)) <= figures["input_tokens_bound"]


def test_costs_follow_the_price_table_at_batch_price() -> None:
    reqs = requests(5)
    estimate = estimate_cost(tally_of(reqs), fake_tokens, prices)
    p = model_price(MODEL)
    assert p.input == pytest.approx(3.0 / 2 / 1e6)
    worst = true_tokens(reqs) * p.input + sum(r["params"]["max_tokens"] for r in reqs) * p.output
    assert estimate.worst_case_cost_usd == pytest.approx(worst, abs=1e-6)
    expected = true_tokens(reqs) * p.input + round(0.5 * sum(r["params"]["max_tokens"] for r in reqs)) * p.output
    assert estimate.expected_cost_usd == pytest.approx(expected, abs=1e-6)


def test_cache_prices_are_derived_and_an_unknown_model_names_the_table() -> None:
    row = validate_price_table({"mine": {"input": 2.0, "output": 4.0}})["mine"]
    assert row["cache_write"] == 2.5 and row["cache_write_1h"] == 4.0 and row["cache_read"] == pytest.approx(0.2)
    p = model_price("claude-haiku-4-5")
    assert p.cache_write("1h") == pytest.approx(2 * p.input) and p.cache_write("5m") == pytest.approx(1.25 * p.input)
    assert p.cache_read == pytest.approx(0.1 * p.input)
    with pytest.raises(UnknownModelPrice, match=r"claude-mystery.*price_table=.*DEFAULT_PRICE_TABLE"):
        estimate_cost(
            tally_of([{**requests(1)[0], "params": {**requests(1)[0]["params"], "model": "claude-mystery"}}]),
            fake_tokens,
            prices,
        )


def test_shared_prefix_is_one_write_and_reads_for_the_rest() -> None:
    system = [{"type": "text", "text": "s" * 8000, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    prefix = shared_prefix({"system": system, "model": MODEL})
    assert prefix is not None and prefix.ttl == "1h" and prefix.keys == ("system",)
    assert shared_prefix({"system": "plain"}) is None
    reqs = [{**r, "params": {**r["params"], "system": system}} for r in requests(40)]
    estimate = estimate_cost(tally_of(reqs, prefix_keys=("system",)), fake_tokens, prices, prefix=prefix)
    m = estimate.by_model[MODEL]
    assert m.cache_prefix_tokens == 2000
    assert m.cache_creation_input_tokens == 2000 and m.cache_read_input_tokens == 39 * 2000
    assert m.input_tokens == true_tokens(reqs) - 40 * 2000
    p = model_price(MODEL)
    # Worst case: no hit, every request writes at the 1-hour rate.
    assert m.worst_case_cost_usd == pytest.approx(
        m.input_tokens * p.input + 40 * 2000 * p.cache_write_1h + m.output_tokens_worst_case * p.output
    )


def test_the_budget_gate_names_figures_and_the_costliest_requests() -> None:
    reqs = requests(30)
    reqs[17]["params"]["max_tokens"] = 8192
    estimate = estimate_cost(tally_of(reqs), fake_tokens, prices)
    check_budget(estimate, estimate.worst_case_cost_usd + 0.01, "worst_case")
    check_budget(estimate, estimate.expected_cost_usd + 0.0001, "expected")
    with pytest.raises(BudgetExceeded) as info:
        check_budget(estimate, estimate.worst_case_cost_usd / 2, "worst_case")
    text = str(info.value)
    assert f"${estimate.worst_case_cost_usd:,.4f}" in text and "nothing was sent" in text
    assert "r17 (f.jsonl:18): max_tokens 8,192" in text
    assert len(estimate.most_expensive) == 3 and estimate.most_expensive[0]["custom_id"] == "r17"
    assert parse_budget("12.5") == 12.5 and parse_budget(None) is None
    with pytest.raises(CostError, match="max_cost_usd must be a number"):
        parse_budget("lots")


def test_an_unknown_model_names_close_matches() -> None:
    known = {"claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"}
    with pytest.raises(
        UnknownModelError, match=r"'claude-sonet-4-5-20250929' \(did you mean 'claude-sonnet-4-5-20250929'"
    ):
        check_models(["claude-sonet-4-5-20250929", "claude-haiku-4-5-20251001"], known.__contains__, lambda: known)
    check_models(["claude-haiku-4-5-20251001"], known.__contains__, lambda: known)


def test_the_output_ratio_is_learned_from_earlier_manifests(tmp_path: Path) -> None:
    for day, out in (("2026-01-01", 250), ("2026-01-02", 350)):
        folder = tmp_path / day
        folder.mkdir()
        (folder / "_manifest.json").write_text(
            json.dumps(
                {
                    "ended_at": f"{day}T00:00:00Z",
                    "lines": 10,
                    "counts": {"succeeded": 10},
                    "tokens_by_model": {MODEL: {"output": out}},
                    "estimate": {"by_model": {MODEL: {"output_tokens_worst_case": 1000}}},
                }
            )
        )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "_manifest.json").write_text("{not json")
    ratios, source = learned_output_ratios(ObjectStoragePath(f"file://{tmp_path}/2026-01-03"))
    assert ratios[MODEL] == pytest.approx(0.3) and source is not None and "2 earlier manifest" in source
    assert learned_output_ratios(ObjectStoragePath(f"file://{tmp_path}/none/x")) == ({}, None)
    estimate = estimate_cost(tally_of(requests(4)), fake_tokens, prices, output_ratios=ratios)
    m = estimate.by_model[MODEL]
    assert m.output_tokens_expected == round(0.3 * m.output_tokens_worst_case)

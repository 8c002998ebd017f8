"""The price table: model ids matched by their longest prefix, the batch discount, and the table's checks."""

from __future__ import annotations

import pytest

from airflow_provider_anthropix.cost.pricing import (
    DEFAULT_PRICE_TABLE,
    TokenTotals,
    price_for,
    usage_cost,
    validate_price_table,
)


def test_cost_uses_the_longest_prefix_and_the_batch_discount() -> None:
    assert price_for("claude-opus-4-5-20251101", DEFAULT_PRICE_TABLE) is DEFAULT_PRICE_TABLE["claude-opus-4-5"]
    assert price_for("claude-opus-4-20250514", DEFAULT_PRICE_TABLE) is DEFAULT_PRICE_TABLE["claude-opus-4"]
    tokens = {
        "claude-sonnet-4-5-20250929": TokenTotals(
            input=1_000_000, output=1_000_000, cache_creation_input=1_000_000, cache_read_input=1_000_000
        ),
        "mystery-model": TokenTotals(input=5),
    }
    estimate = usage_cost(tokens)
    assert estimate.usd == pytest.approx((3.00 + 15.00 + 3.75 + 0.30) / 2)
    assert estimate.unpriced_models == ["mystery-model"]
    custom = validate_price_table({"mystery": {"input": 2, "output": 4}})
    assert usage_cost(tokens, custom).usd == pytest.approx(5 * 2 / 1e6 / 2)
    with pytest.raises(ValueError, match="unknown key"):
        validate_price_table({"m": {"input": 1, "output": 1, "cachewrite": 1}})
    with pytest.raises(ValueError, match="needs at least"):
        validate_price_table({"m": {"input": 1}})

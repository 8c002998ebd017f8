"""Estimated cost of a batch from its token totals.

Prices change, so the table is data the caller can replace (``price_table=`` on the
operator). Prices are the *standard* per-million-token prices in US dollars; batch
requests are billed at half of them (``BATCH_DISCOUNT``). A model id matches the longest
table key it starts with, so ``claude-sonnet-4-5-20250929`` uses ``claude-sonnet-4-5``.

The default table (USD per million tokens, standard price; check the current price list
before relying on the estimate):

=========================  =====  ======  ===========  ==========
model prefix               input  output  cache_write  cache_read
=========================  =====  ======  ===========  ==========
claude-opus-4-5            5.00   25.00   6.25         0.50
claude-opus-4-1            15.00  75.00   18.75        1.50
claude-opus-4              15.00  75.00   18.75        1.50
claude-sonnet-4-5          3.00   15.00   3.75         0.30
claude-sonnet-4            3.00   15.00   3.75         0.30
claude-3-7-sonnet          3.00   15.00   3.75         0.30
claude-haiku-4-5           1.00   5.00    1.25         0.10
claude-3-5-haiku           0.80   4.00    1.00         0.08
claude-3-haiku             0.25   1.25    0.30         0.03
=========================  =====  ======  ===========  ==========

Prompt caching: a cache write costs 1.25x the input price with the 5-minute TTL and 2x with
the 1-hour TTL; a cache read costs 0.1x. A row may state ``cache_write`` (5 minutes),
``cache_write_1h`` and ``cache_read`` itself; the ones it leaves out are derived from its
``input`` price with those multipliers. The batch discount applies on top of all of them.

A model that matches no key is priced by nobody: the estimate before a create refuses it
(:class:`UnknownModelPrice`, naming this table and the operator's ``price_table``
argument); the cost summary after the fact lists it as unpriced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_anthropix.api.errors import AnthropixError


@dataclass
class TokenTotals:
    """Token sums, per model or overall."""

    input: int = 0
    output: int = 0
    cache_creation_input: int = 0
    cache_read_input: int = 0

    def add(self, other: TokenTotals) -> None:
        self.input += other.input
        self.output += other.output
        self.cache_creation_input += other.cache_creation_input
        self.cache_read_input += other.cache_read_input

    def to_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_creation_input": self.cache_creation_input,
            "cache_read_input": self.cache_read_input,
        }


#: Share of the standard price that batch requests cost.
BATCH_DISCOUNT = 0.5
#: Cache prices as multiples of the model's input price (before the batch discount).
CACHE_WRITE_5M_MULTIPLIER = 1.25
CACHE_WRITE_1H_MULTIPLIER = 2.0
CACHE_READ_MULTIPLIER = 0.1
#: Where a user extends the table, for error messages.
TABLE_NAME = "airflow_provider_anthropix.cost.pricing.DEFAULT_PRICE_TABLE"

PriceTable = Mapping[str, Mapping[str, float]]

DEFAULT_PRICE_TABLE: dict[str, dict[str, float]] = {
    "claude-opus-4-5": {"input": 5.00, "output": 25.00, "cache_write": 6.25, "cache_read": 0.50},
    "claude-opus-4-1": {"input": 15.00, "output": 75.00, "cache_write": 18.75, "cache_read": 1.50},
    "claude-opus-4": {"input": 15.00, "output": 75.00, "cache_write": 18.75, "cache_read": 1.50},
    "claude-sonnet-4-5": {"input": 3.00, "output": 15.00, "cache_write": 3.75, "cache_read": 0.30},
    "claude-sonnet-4": {"input": 3.00, "output": 15.00, "cache_write": 3.75, "cache_read": 0.30},
    "claude-3-7-sonnet": {"input": 3.00, "output": 15.00, "cache_write": 3.75, "cache_read": 0.30},
    "claude-haiku-4-5": {"input": 1.00, "output": 5.00, "cache_write": 1.25, "cache_read": 0.10},
    "claude-3-5-haiku": {"input": 0.80, "output": 4.00, "cache_write": 1.00, "cache_read": 0.08},
    "claude-3-haiku": {"input": 0.25, "output": 1.25, "cache_write": 0.30, "cache_read": 0.03},
}

_PRICE_KEYS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")
_DERIVED = {
    "cache_write": CACHE_WRITE_5M_MULTIPLIER,
    "cache_write_1h": CACHE_WRITE_1H_MULTIPLIER,
    "cache_read": CACHE_READ_MULTIPLIER,
}


def validate_price_table(table: PriceTable) -> dict[str, dict[str, float]]:
    """Check a user's table early (at DAG parse time); missing cache prices are derived from ``input``."""
    checked: dict[str, dict[str, float]] = {}
    for model, prices in table.items():
        if not isinstance(prices, Mapping):
            raise ValueError(f"price_table[{model!r}] must be a mapping of {', '.join(_PRICE_KEYS)}")
        unknown = sorted(set(prices) - set(_PRICE_KEYS))
        if unknown:
            raise ValueError(f"price_table[{model!r}] has unknown key(s) {unknown}; known: {', '.join(_PRICE_KEYS)}")
        if "input" not in prices or "output" not in prices:
            raise ValueError(f"price_table[{model!r}] needs at least 'input' and 'output' (USD per million tokens)")
        base = float(prices["input"])
        row = {key: float(prices[key]) if key in prices else base * _DERIVED.get(key, 0.0) for key in _PRICE_KEYS}
        if any(value < 0 for value in row.values()):
            raise ValueError(f"price_table[{model!r}] has a negative price")
        checked[str(model)] = row
    return checked


def price_for(model: str, table: PriceTable) -> Mapping[str, float] | None:
    """The row of the longest key that ``model`` starts with (or equals), else None."""
    best: str | None = None
    for key in table:
        if model.startswith(key) and (best is None or len(key) > len(best)):
            best = key
    return table[best] if best is not None else None


class UnknownModelPrice(AnthropixError, ValueError):
    """A model the price table has no row for: an estimate cannot price it."""

    def __init__(self, models: list[str], table: PriceTable) -> None:
        self.models = sorted(models)
        keys = ", ".join(sorted(table)) or "none"
        super().__init__(
            f"no price for model(s) {', '.join(self.models)} in the price table (model prefixes known: {keys}); "
            f"extend the table with price_table={{'<model prefix>': {{'input': ..., 'output': ...}}}} "
            f"(USD per million tokens, standard price; default table: {TABLE_NAME})"
        )


@dataclass(frozen=True)
class ModelPrice:
    """USD per token of one model at the price actually billed (batch discount applied)."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float

    def cache_write(self, ttl: str | None) -> float:
        return self.cache_write_1h if ttl == "1h" else self.cache_write_5m


def model_price(model: str, table: PriceTable | None = None, *, discount: float = BATCH_DISCOUNT) -> ModelPrice:
    """Per-token prices of ``model`` at batch price; :class:`UnknownModelPrice` when no row matches."""
    table = DEFAULT_PRICE_TABLE if table is None else table
    row = price_for(model, table)
    if row is None:
        raise UnknownModelPrice([model], table)
    base = float(row.get("input", 0.0))

    def rate(key: str) -> float:
        value = row.get(key)
        per_million = float(value) if value is not None else base * _DERIVED.get(key, 0.0)
        return per_million * discount / 1_000_000

    return ModelPrice(
        input=rate("input"),
        output=rate("output"),
        cache_write_5m=rate("cache_write"),
        cache_write_1h=rate("cache_write_1h"),
        cache_read=rate("cache_read"),
    )


def cache_savings_usd(totals: TokenTotals, prices: ModelPrice, *, ttl: str | None = None) -> float:
    """What caching saved against sending the cached tokens uncached (negative when writes outweigh reads)."""
    read_saving = totals.cache_read_input * (prices.input - prices.cache_read)
    write_extra = totals.cache_creation_input * (prices.cache_write(ttl) - prices.input)
    return read_saving - write_extra


@dataclass
class UsageCost:
    """What token usage that already happened cost at batch price (not an estimate before sending:
    that is :class:`airflow_provider_anthropix.cost.estimate.CostEstimate`)."""

    usd: float = 0.0
    unpriced_models: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimated_cost_usd": self.usd,
            "batch_discount": BATCH_DISCOUNT,
            "unpriced_models": list(self.unpriced_models),
        }


def usage_cost(
    tokens_by_model: Mapping[str, TokenTotals],
    table: PriceTable | None = None,
    *,
    discount: float = BATCH_DISCOUNT,
) -> UsageCost:
    """USD at batch price for the given token totals; models missing from the table are listed, not guessed."""
    table = DEFAULT_PRICE_TABLE if table is None else table
    estimate = UsageCost()
    for model, totals in sorted(tokens_by_model.items()):
        prices = price_for(model, table)
        if prices is None:
            estimate.unpriced_models.append(model)
            continue
        standard = (
            totals.input * prices.get("input", 0.0)
            + totals.output * prices.get("output", 0.0)
            + totals.cache_creation_input * prices.get("cache_write", 0.0)
            + totals.cache_read_input * prices.get("cache_read", 0.0)
        ) / 1_000_000
        estimate.usd += standard * discount
    estimate.usd = round(estimate.usd, 6)
    return estimate


#: The earlier name of :func:`usage_cost` (it prices usage that happened; it estimates nothing).
estimate_cost = usage_cost

"""What a batch will cost, known before it is paid for: the estimate, the budget gate, the model check.

A batch is billed when it is created, so everything here runs between validation and the
first create, without Airflow:

1. **Tally** (:class:`CostTally`): one pass over the validated requests (the create's spool or
   the job's shard files) records per model the request count, the encoded size, the sum of
   ``max_tokens``, who shares the cached prefix of ``default_params``, a uniform sample
   (reservoir, seeded, so the same input gives the same sample) and the most expensive
   requests. Memory is flat: a few counters and the sample, whatever the batch size.
2. **Count** (:func:`estimate_cost`): the sample's exact input tokens come from the token
   counting endpoint; the rest are extrapolated from their encoded size by a straight line
   fitted on the sample (``tokens = a + b * bytes``), with an error bound of
   :data:`BOUND_SIGMAS` standard errors of that prediction (zero when every request was
   counted). Output tokens: the worst case is every request's ``max_tokens``; the expected
   case is a share of it (learned from earlier manifests, else :data:`DEFAULT_OUTPUT_RATIO`).
   A shared prefix with ``cache_control`` costs one cache write per batch and model and a
   read for every other request that carries it (the worst case: a write for every request).
3. **Gate** (:func:`check_budget`) and **model check** (:func:`check_models`).

The figures are per model and at batch price (see :mod:`airflow_provider_anthropix.cost.pricing`).
"""

from __future__ import annotations

import difflib
import heapq
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.cost.budget import BUDGET_BASES, DEFAULT_SAMPLE_SIZE

#: Share of ``max_tokens`` an answer is expected to use when no earlier manifest says better.
DEFAULT_OUTPUT_RATIO = 0.5
#: The error bound is this many standard errors of the extrapolated input tokens.
BOUND_SIGMAS = 3.0
#: Fewest tokens a cached prefix must have, by model family (shorter prefixes are not cached by the API).
MIN_CACHEABLE_TOKENS = 1024
MIN_CACHEABLE_TOKENS_SMALL = 2048
_SMALL_MODELS = ("claude-3-haiku", "claude-3-5-haiku", "claude-haiku")
#: A line users can read about the bound, repeated in logs, XCom and the manifest.
BOUND_MEANING = (
    f"input tokens of the requests not counted, extrapolated from their encoded size; the bound is "
    f"{BOUND_SIGMAS:g} standard errors of that extrapolation (0 when every request was counted)"
)


class Prices(Protocol):
    """USD per token of one model at the price billed (``cost.pricing.ModelPrice`` is one)."""

    @property
    def input(self) -> float: ...
    @property
    def output(self) -> float: ...
    @property
    def cache_read(self) -> float: ...
    def cache_write(self, ttl: str | None) -> float: ...


#: ``model -> Prices``; raises (``cost.pricing.UnknownModelPrice``) for a model it cannot price.
PriceLookup = Callable[[str], Prices]


class CostError(AnthropixError):
    """The estimate cannot be made or the batch must not be sent; never worth a retry."""


class BudgetExceeded(CostError):
    """The estimate is above ``max_cost_usd``."""


class UnknownModelError(CostError):
    """A model name the API does not know."""


# -- the shared prefix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SharedPrefix:
    """The cached prefix ``default_params`` gives every request that keeps its ``tools``/``system``.

    :param params: the prefix as a token-countable body, without model and messages.
    :param ttl: ``5m`` or ``1h`` (the last breakpoint's).
    :param keys: which params carry it (``tools``, ``system``): a request shares it when its
        merged params hold the very same values.
    """

    params: Mapping[str, Any]
    ttl: str
    keys: tuple[str, ...]


def _cache_marks(blocks: Any) -> list[tuple[int, str]]:
    if not isinstance(blocks, list):
        return []
    marks = []
    for index, block in enumerate(blocks):
        control = block.get("cache_control") if isinstance(block, Mapping) else None
        if isinstance(control, Mapping) and control.get("type") == "ephemeral":
            marks.append((index, "1h" if control.get("ttl") == "1h" else "5m"))
    return marks


def shared_prefix(default_params: Mapping[str, Any] | None) -> SharedPrefix | None:
    """The prefix of ``default_params`` up to its last ``cache_control`` breakpoint, or None.

    The API caches in the order tools, system, messages; a breakpoint in ``system`` caches
    all tools before it. Breakpoints inside a request's own messages are not a shared prefix.
    """
    if not default_params:
        return None
    tools = default_params.get("tools")
    system = default_params.get("system")
    tool_marks = _cache_marks(tools)
    system_marks = _cache_marks(system)
    if not tool_marks and not system_marks:
        return None
    prefix: dict[str, Any] = {}
    keys: list[str] = []
    if system_marks and isinstance(system, list):
        last, ttl = system_marks[-1]
        if isinstance(tools, list) and tools:
            prefix["tools"] = tools
            keys.append("tools")
        prefix["system"] = list(system[: last + 1])
        keys.append("system")
    elif isinstance(tools, list):
        last, ttl = tool_marks[-1]
        prefix["tools"] = list(tools[: last + 1])
        keys.append("tools")
    else:
        return None
    return SharedPrefix(params=prefix, ttl=ttl, keys=tuple(keys))


def min_cacheable_tokens(model: str) -> int:
    return MIN_CACHEABLE_TOKENS_SMALL if model.startswith(_SMALL_MODELS) else MIN_CACHEABLE_TOKENS


# -- the tally ---------------------------------------------------------------------------------------


@dataclass
class _Sampled:
    custom_id: str
    where: str
    size: int
    payload: Any


@dataclass
class _ModelTally:
    """Counters of one model, and its reservoir (Algorithm L: the skip to the next replacement is drawn once)."""

    model: str
    weight_in: float
    weight_out: float
    count: int = 0
    size_sum: int = 0
    max_tokens_sum: int = 0
    sharing: int = 0
    batches_sharing: set[Any] = field(default_factory=set)
    sample: list[_Sampled] = field(default_factory=list)
    next_pick: int = 0
    w: float = 1.0


@dataclass(order=True)
class _Costly:
    proxy: float
    seq: int
    custom_id: str = field(compare=False)
    where: str = field(compare=False)
    model: str = field(compare=False)
    size: int = field(compare=False)
    max_tokens: int = field(compare=False)


class CostTally:
    """What the estimate needs from every request, gathered in the pass that validates them.

    Call :meth:`observe` once per valid request. Cheap on purpose (a few additions, and a
    random draw only when the reservoir takes a request): it runs 100,000 times before a
    create.

    :param sample_size: requests counted exactly per model (all of them when there are fewer).
    :param seed: seeds the sample, so the same input gives the same estimate.
    :param prices: used only to rank the most expensive requests (unpriced models rank as Sonnet-like).
    :param top: how many of those to keep.
    """

    def __init__(
        self,
        sample_size: int = DEFAULT_SAMPLE_SIZE,
        *,
        seed: int = 0,
        prices: PriceLookup | None = None,
        top: int = 3,
    ) -> None:
        if sample_size < 1:
            raise ValueError(f"estimate_sample_size must be at least 1, got {sample_size}")
        self.sample_size = sample_size
        self.prices = prices
        self.top = top
        self.models: dict[str, _ModelTally] = {}
        self._random = random.Random(seed)
        self._costly: list[_Costly] = []
        self._seq = 0

    def _tally(self, model: str) -> _ModelTally:
        weight_in, weight_out = 0.25, 5.0
        if self.prices is not None:
            try:
                price = self.prices(model)
                weight_in, weight_out = price.input / 4, price.output
            except Exception:  # ranking only; the estimate itself reports the missing price
                pass
        tally = self.models[model] = _ModelTally(model, weight_in, weight_out)
        return tally

    def observe(
        self,
        custom_id: str,
        model: str,
        max_tokens: int,
        size: int,
        where: str,
        payload: Any,
        *,
        shares_prefix: bool = False,
        batch: Any = 0,
    ) -> None:
        """Record one request.

        :param size: its encoded size in bytes.
        :param where: ``file:line`` (or ``requests[i]``) for messages.
        :param payload: its params (a dict), or its encoded line (bytes) to decode if sampled.
        :param shares_prefix: whether it carries the shared cached prefix.
        :param batch: which batch it goes to (one cache write per batch and model).
        """
        tally = self.models.get(model)
        if tally is None:
            tally = self._tally(model)
        tally.count += 1
        tally.size_sum += size
        tally.max_tokens_sum += max_tokens
        if shares_prefix:
            tally.sharing += 1
            tally.batches_sharing.add(batch)
        k = self.sample_size
        if tally.count <= k:
            tally.sample.append(_Sampled(custom_id, where, size, payload))
            if tally.count == k:
                self._skip(tally)
        elif tally.count == tally.next_pick:
            tally.sample[self._random.randrange(k)] = _Sampled(custom_id, where, size, payload)
            self._skip(tally)
        proxy = tally.weight_in * size + tally.weight_out * max_tokens
        costly = self._costly
        if len(costly) < self.top or proxy > costly[0].proxy:
            self._seq += 1
            entry = _Costly(proxy, -self._seq, custom_id, where, model, size, max_tokens)
            if len(costly) < self.top:
                heapq.heappush(costly, entry)
            else:
                heapq.heapreplace(costly, entry)

    def _skip(self, tally: _ModelTally) -> None:
        k = self.sample_size
        tally.w *= math.exp(math.log(self._random.random() or 1e-12) / k)
        gap = math.floor(math.log(self._random.random() or 1e-12) / math.log(1 - tally.w)) if tally.w < 1 else 0
        tally.next_pick = tally.count + gap + 1

    @property
    def requests(self) -> int:
        return sum(t.count for t in self.models.values())

    def most_expensive(self) -> list[_Costly]:
        return sorted(self._costly, reverse=True)


# -- the estimate ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fit:
    """tokens = a + b * bytes over the sample, and what the prediction of the rest may be off by."""

    a: float
    b: float
    bound: float

    def predict(self, size: float) -> float:
        return self.a + self.b * size


def _fit(xs: list[int], ys: list[int], rest_count: int, rest_size: int) -> _Fit:
    n = len(xs)
    if rest_count == 0:
        return _Fit(0.0, 0.0, 0.0)
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if n >= 3 and sxx > 0:
        b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
        a = mean_y - b * mean_x
        dof = n - 2
    else:
        # Too few distinct sizes for a line: tokens in proportion to bytes.
        a, b = 0.0, (sum(ys) / sum(xs) if sum(xs) else 0.0)
        dof = max(n - 1, 1)
    residuals = [y - (a + b * x) for x, y in zip(xs, ys, strict=True)]
    # At least one token of spread: a sample that fits exactly says little about the others.
    sigma2 = max(sum(r * r for r in residuals) / dof, 1.0)
    mean_rest = rest_size / rest_count
    leverage = 1 / n + ((mean_rest - mean_x) ** 2 / sxx if sxx > 0 else (mean_rest / max(mean_x, 1.0)) ** 2)
    variance = sigma2 * (rest_count + rest_count**2 * leverage)
    return _Fit(a, b, BOUND_SIGMAS * math.sqrt(variance))


@dataclass
class ModelEstimate:
    """The estimate of one model's requests."""

    model: str
    requests: int
    sampled: int
    input_tokens: int
    input_tokens_bound: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cache_prefix_tokens: int
    output_tokens_expected: int
    output_tokens_worst_case: int
    output_ratio: float
    expected_cost_usd: float
    worst_case_cost_usd: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "sampled": self.sampled,
            "input_tokens": self.input_tokens,
            "input_tokens_bound": self.input_tokens_bound,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_prefix_tokens": self.cache_prefix_tokens,
            "output_tokens_expected": self.output_tokens_expected,
            "output_tokens_worst_case": self.output_tokens_worst_case,
            "output_ratio": round(self.output_ratio, 4),
            "expected_cost_usd": round(self.expected_cost_usd, 6),
            "worst_case_cost_usd": round(self.worst_case_cost_usd, 6),
        }


@dataclass
class CostEstimate:
    """The whole estimate: per model, totals, and the requests that cost most."""

    by_model: dict[str, ModelEstimate]
    most_expensive: list[dict[str, Any]]
    output_ratio_source: str
    cache_ttl: str | None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(m.requests for m in self.by_model.values())

    @property
    def sampled(self) -> int:
        return sum(m.sampled for m in self.by_model.values())

    @property
    def expected_cost_usd(self) -> float:
        return round(sum(m.expected_cost_usd for m in self.by_model.values()), 6)

    @property
    def worst_case_cost_usd(self) -> float:
        return round(sum(m.worst_case_cost_usd for m in self.by_model.values()), 6)

    def total(self, key: str) -> int:
        return sum(int(getattr(m, key)) for m in self.by_model.values())

    def cost(self, basis: str) -> float:
        return self.worst_case_cost_usd if basis == "worst_case" else self.expected_cost_usd

    def to_dict(self) -> dict[str, Any]:
        """Small and JSON-safe (XCom, journal, manifest): figures, never a prompt."""
        return {
            "requests": self.requests,
            "sampled": self.sampled,
            "expected_cost_usd": self.expected_cost_usd,
            "worst_case_cost_usd": self.worst_case_cost_usd,
            "input_tokens": self.total("input_tokens"),
            "input_tokens_bound": self.total("input_tokens_bound"),
            "cache_creation_input_tokens": self.total("cache_creation_input_tokens"),
            "cache_read_input_tokens": self.total("cache_read_input_tokens"),
            "output_tokens_expected": self.total("output_tokens_expected"),
            "output_tokens_worst_case": self.total("output_tokens_worst_case"),
            "output_ratio_source": self.output_ratio_source,
            "cache_ttl": self.cache_ttl,
            "error_bound": BOUND_MEANING,
            "by_model": {model: m.to_dict() for model, m in sorted(self.by_model.items())},
            "most_expensive": list(self.most_expensive),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }

    def describe(self) -> str:
        """One paragraph for the log and error messages."""
        parts = [
            f"{model}: {m.requests:,} requests ({m.sampled:,} counted), ~{m.input_tokens:,} ± {m.input_tokens_bound:,} "
            f"input tokens"
            + (
                f" (+ cache {m.cache_creation_input_tokens:,} written, {m.cache_read_input_tokens:,} read)"
                if m.cache_prefix_tokens
                else ""
            )
            + f", output {m.output_tokens_expected:,} expected / {m.output_tokens_worst_case:,} at most; "
            f"${m.expected_cost_usd:,.4f} expected, ${m.worst_case_cost_usd:,.4f} worst case"
            for model, m in sorted(self.by_model.items())
        ]
        return (
            f"estimated cost at batch price: ${self.expected_cost_usd:,.4f} expected, "
            f"${self.worst_case_cost_usd:,.4f} worst case, for {self.requests:,} requests "
            f"({'; '.join(parts)}; expected output from {self.output_ratio_source})"
        )


def _params_of(payload: Any) -> Mapping[str, Any]:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        import msgspec  # only a sampled request needs decoding; DAG files import this module for its defaults

        decoded = msgspec.json.decode(bytes(payload))
        params: Mapping[str, Any] = decoded["params"]
        return params
    if isinstance(payload, Mapping):
        return payload
    raise TypeError(f"cannot count tokens of a {type(payload).__name__}")


def estimate_cost(
    tally: CostTally,
    count_tokens: Callable[[Mapping[str, Any]], int],
    prices: PriceLookup,
    *,
    prefix: SharedPrefix | None = None,
    output_ratios: Mapping[str, float] | None = None,
    output_ratio_source: str = f"the default ratio {DEFAULT_OUTPUT_RATIO:g} of max_tokens",
) -> CostEstimate:
    """Count the sample, extrapolate the rest and price it; see the module docstring.

    Every model is priced before the first token count, so a model without a price fails
    before any call is made.

    :param count_tokens: ``params -> input tokens`` (the hook's count_tokens).
    :param prices: ``model -> Prices``, e.g. ``lambda m: cost.pricing.model_price(m, table)``.
    :param output_ratios: expected output tokens / ``max_tokens`` per model (``"*"``: any model).
    """
    started = time.monotonic()
    price_of = {model: prices(model) for model in sorted(tally.models)}
    ratios = dict(output_ratios or {})
    notes: list[str] = []
    by_model: dict[str, ModelEstimate] = {}
    fits: dict[str, _Fit] = {}
    for model, t in sorted(tally.models.items()):
        price = price_of[model]
        sizes = [s.size for s in t.sample]
        counted = [count_tokens(_params_of(s.payload)) for s in t.sample]
        rest_count = t.count - len(t.sample)
        rest_size = t.size_sum - sum(sizes)
        fit = fits[model] = _fit(sizes, counted, rest_count, rest_size)
        total_input = sum(counted) + max(0.0, fit.a * rest_count + fit.b * rest_size)
        bound = math.ceil(fit.bound)
        prefix_tokens = 0
        if prefix is not None and t.sharing:
            prefix_tokens = _prefix_tokens(model, prefix, count_tokens)
            if prefix_tokens < min_cacheable_tokens(model):
                notes.append(
                    f"{model}: the cached prefix of default_params is {prefix_tokens:,} tokens, below the "
                    f"{min_cacheable_tokens(model):,} the API caches; estimated as uncached input"
                )
                prefix_tokens = 0
        writes = len(t.batches_sharing) if prefix_tokens else 0
        write_tokens = writes * prefix_tokens
        read_tokens = (t.sharing - writes) * prefix_tokens if prefix_tokens else 0
        uncached = max(0, round(total_input) - t.sharing * prefix_tokens)
        ratio = min(1.0, max(0.0, ratios.get(model, ratios.get("*", DEFAULT_OUTPUT_RATIO))))
        out_expected = round(t.max_tokens_sum * ratio)
        ttl = prefix.ttl if prefix is not None else None
        expected = (
            uncached * price.input
            + write_tokens * price.cache_write(ttl)
            + read_tokens * price.cache_read
            + out_expected * price.output
        )
        # Worst case: the input at its bound, no cache hit (every request writes), every max_tokens used.
        worst = (
            (uncached + bound) * price.input
            + t.sharing * prefix_tokens * price.cache_write(ttl)
            + t.max_tokens_sum * price.output
        )
        by_model[model] = ModelEstimate(
            model=model,
            requests=t.count,
            sampled=len(t.sample),
            input_tokens=uncached,
            input_tokens_bound=bound,
            cache_creation_input_tokens=write_tokens,
            cache_read_input_tokens=read_tokens,
            cache_prefix_tokens=prefix_tokens,
            output_tokens_expected=out_expected,
            output_tokens_worst_case=t.max_tokens_sum,
            output_ratio=ratio,
            expected_cost_usd=expected,
            worst_case_cost_usd=worst,
        )
    costly = []
    for entry in tally.most_expensive():
        price = price_of[entry.model]
        tokens = max(0, round(fits[entry.model].predict(entry.size))) if entry.model in fits else 0
        costly.append(
            {
                "custom_id": entry.custom_id,
                "where": entry.where,
                "model": entry.model,
                "input_tokens_about": tokens,
                "max_tokens": entry.max_tokens,
                "worst_case_cost_usd": round(tokens * price.input + entry.max_tokens * price.output, 6),
            }
        )
    return CostEstimate(
        by_model=by_model,
        most_expensive=costly,
        output_ratio_source=output_ratio_source,
        cache_ttl=prefix.ttl if prefix is not None else None,
        seconds=time.monotonic() - started,
        notes=notes,
    )


#: The smallest user turn: counted with and without the prefix, the difference is the prefix.
_PROBE_MESSAGES = [{"role": "user", "content": "."}]


def _prefix_tokens(model: str, prefix: SharedPrefix, count_tokens: Callable[[Mapping[str, Any]], int]) -> int:
    with_prefix = count_tokens({"model": model, **prefix.params, "messages": _PROBE_MESSAGES})
    without = count_tokens({"model": model, "messages": _PROBE_MESSAGES})
    return max(0, with_prefix - without)


# -- the gate and the model check ------------------------------------------------------------------


def check_budget(estimate: CostEstimate, max_cost_usd: float | None, basis: str) -> None:
    """Raise :class:`BudgetExceeded` with the figures and the costliest requests when over budget."""
    if basis not in BUDGET_BASES:
        raise ValueError(f"budget_basis must be one of {', '.join(BUDGET_BASES)}; got {basis!r}")
    if max_cost_usd is None:
        return
    cost = estimate.cost(basis)
    if cost <= max_cost_usd:
        return
    costly = "; ".join(
        f"{c['custom_id']} ({c['where']}): max_tokens {c['max_tokens']:,}, ~{c['input_tokens_about']:,} input "
        f"tokens, up to ${c['worst_case_cost_usd']:,.4f}"
        for c in estimate.most_expensive
    )
    raise BudgetExceeded(
        f"over budget: the {basis.replace('_', ' ')} cost ${cost:,.4f} is above max_cost_usd ${max_cost_usd:,.4f}; "
        f"nothing was sent. {estimate.describe()}. Most expensive requests: {costly or 'none'}. "
        "Lower max_tokens, send fewer requests, raise max_cost_usd"
        + (", or use budget_basis='expected'" if basis == "worst_case" else "")
    )


def parse_budget(value: Any) -> float | None:
    """``max_cost_usd`` after templating: None, a number, or a number's text; else a clear error."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, bool):
        raise CostError(f"max_cost_usd must be a number of US dollars, got {value!r}")
    try:
        budget = float(value)
    except (TypeError, ValueError):
        raise CostError(f"max_cost_usd must be a number of US dollars, got {value!r}") from None
    if not math.isfinite(budget) or budget < 0:
        raise CostError(f"max_cost_usd must be a finite number >= 0, got {value!r}")
    return budget


def check_models(
    models: Iterable[str],
    exists: Callable[[str], bool],
    known: Callable[[], set[str]],
) -> None:
    """Raise :class:`UnknownModelError` naming every model the API does not know, with close matches."""
    missing = sorted(model for model in set(models) if not exists(model))
    if not missing:
        return
    names = sorted(known())
    parts = []
    for model in missing:
        close = difflib.get_close_matches(model, names, n=3, cutoff=0.6)
        parts.append(f"{model!r}" + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""))
    raise UnknownModelError(
        f"unknown model(s) {', '.join(parts)}: not in the API's model list (GET /v1/models) and not an alias it "
        "resolves; nothing was sent. Fix the model name, or pass check_models=False for a model the list does "
        "not show"
    )

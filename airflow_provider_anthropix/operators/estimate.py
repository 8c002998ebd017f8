"""The estimate, budget gate and model check as operators run them (shared by the create and the job).

The logic is :mod:`airflow_provider_anthropix.cost.estimate`; this module only wires it to
the hook, the price table and Airflow's exceptions: a budget or model problem fails the task
without retries (a retry would fail the same way), an API outage during the estimate is an
ordinary retryable failure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_anthropix.cost import budget as budget_module
from airflow_provider_anthropix.cost.budget import BUDGET_BASES, DEFAULT_SAMPLE_SIZE

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_anthropix.api.errors import AnthropixError
    from airflow_provider_anthropix.cost.estimate import CostEstimate, CostTally, SharedPrefix
    from airflow_provider_anthropix.cost.pricing import PriceTable
    from airflow_provider_anthropix.hooks.anthropix import AnthropixHook

#: XCom key of the estimate (the create's return value stays the batch id).
XCOM_KEY = "estimate"
#: How a user goes on without the model check, for its failure's message.
_SKIP_MODELS = "pass check_models=False to the operator (the API then judges the model names itself)"


@dataclass(frozen=True, kw_only=True)
class CostOptions:
    """The operator arguments of the estimate, checked when the DAG is parsed.

    Keyword-only: two of the fields are booleans side by side, which positional arguments
    would let a caller swap unnoticed. The budget itself, ``max_cost_usd``, is not one of them: it
    is an operator argument of its own (templated, so parsed at run time).

    :param budget_basis: ``worst_case`` (every max_tokens used, input at its bound, no cache hit) or ``expected``.
    :param dry_run: validate and estimate, send nothing.
    :param sample_size: requests counted exactly per model (token counting is free but rate limited).
    :param check_models: check model names against the API's model list first.
    :param price_table: per-model prices (``None``: the default table).
    """

    budget_basis: str = "worst_case"
    dry_run: bool = False
    sample_size: int = DEFAULT_SAMPLE_SIZE
    check_models: bool = True
    price_table: Mapping[str, Mapping[str, float]] | None = None

    def __post_init__(self) -> None:
        if self.budget_basis not in BUDGET_BASES:
            raise ValueError(f"budget_basis must be one of {', '.join(BUDGET_BASES)}; got {self.budget_basis!r}")
        if self.sample_size < 1:
            raise ValueError(f"estimate_sample_size must be 1 or more, got {self.sample_size}")
        if self.price_table is not None:
            from airflow_provider_anthropix.cost.pricing import validate_price_table

            object.__setattr__(self, "price_table", validate_price_table(self.price_table))

    def tally(self) -> CostTally:
        from airflow_provider_anthropix.cost.estimate import CostTally
        from airflow_provider_anthropix.cost.pricing import model_price

        table: PriceTable | None = self.price_table
        return CostTally(self.sample_size, prices=lambda model: model_price(model, table))


class EstimatingTask(Protocol):
    """What :func:`run_estimate` reads of the operator (the create and the job)."""

    @property
    def hook(self) -> AnthropixHook: ...
    @property
    def log(self) -> logging.Logger: ...

    cost_options: CostOptions
    max_cost_usd: Any
    default_params: Mapping[str, Any] | None

    def api_failure(self, exc: AnthropixError, doing: str) -> AirflowException: ...


def run_estimate(
    task: EstimatingTask, tally: CostTally, *, learn_from: ObjectStoragePath | None
) -> CostEstimate | None:
    """Model check, estimate, log, budget gate; returns the estimate (None: a model has no price and no budget is set).

    :param task: the operator: its hook, estimate arguments (rendered ``max_cost_usd``), log and API failures.
    :param tally: the requests as validated, tallied for the estimate.
    :param learn_from: where earlier results landed, to learn output/max_tokens ratios from (None: nowhere).
    """
    from airflow_provider_anthropix.api.bounds import bounded
    from airflow_provider_anthropix.api.errors import AnthropixConnectionError, AnthropixError
    from airflow_provider_anthropix.cost.estimate import (
        CostError,
        check_budget,
        check_models,
        estimate_cost,
        parse_budget,
        shared_prefix,
    )
    from airflow_provider_anthropix.cost.pricing import UnknownModelPrice, model_price
    from airflow_provider_anthropix.io.estimate_inputs import learned_output_ratios

    hook, options, log = task.hook, task.cost_options, task.log
    try:
        budget = parse_budget(task.max_cost_usd)
    except CostError as exc:
        raise AirflowFailException(str(exc)) from None
    try:
        models = sorted(tally.models)
        if options.check_models and models:
            # One deadline for the whole check: see api.bounds (a slow or endless server cannot stretch it).
            with bounded("the model check (GET /v1/models)", budget_module.MODEL_CHECK_SECONDS, skip=_SKIP_MODELS):
                check_models(models, hook.model_exists, hook.known_models)
            log.info("Model(s) %s are known to the API", ", ".join(models))
        prefix: SharedPrefix | None = shared_prefix(task.default_params)
        ratios, source = learned_output_ratios(learn_from)
        table = options.price_table
        kwargs: dict[str, Any] = {"prefix": prefix, "output_ratios": ratios}
        if source:
            kwargs["output_ratio_source"] = source
        skip_count = f"pass a smaller estimate_sample_size (now {options.sample_size}; 1 counts one request per model)"
        try:
            with bounded(
                "the cost estimate's token count (POST /v1/messages/count_tokens)",
                budget_module.TOKEN_COUNT_SECONDS,
                skip=skip_count,
            ):
                estimate = estimate_cost(tally, hook.count_tokens, lambda m: model_price(m, table), **kwargs)
        except UnknownModelPrice as exc:
            if budget is not None or options.dry_run:
                raise AirflowFailException(f"{exc}; nothing was sent") from None
            log.warning("No cost estimate: %s", exc)
            return None
        log.info("Cost estimate (%.2f s): %s", estimate.seconds, estimate.describe())
        for note in estimate.notes:
            log.warning("%s", note)
        check_budget(estimate, budget, options.budget_basis)
    except CostError as exc:
        raise AirflowFailException(str(exc)) from None
    except AnthropixConnectionError as exc:
        if exc.maybe_sent:
            raise task.api_failure(exc, "estimating the cost before sending") from None
        raise AirflowException(f"The batch was not sent: {exc}") from None
    except AnthropixError as exc:
        raise task.api_failure(exc, "estimating the cost before sending") from None
    if budget is not None:
        log.info(
            "Within budget: %s cost $%.4f <= max_cost_usd $%.4f",
            options.budget_basis.replace("_", " "),
            estimate.cost(options.budget_basis),
            budget,
        )
    return estimate


def push_estimate(context: Mapping[str, Any], figures: Mapping[str, Any]) -> None:
    """Push the estimate under XCom key ``estimate`` (a context without a task instance, as in unit tests, skips it)."""
    ti = context.get("ti")
    if ti is not None:
        ti.xcom_push(key=XCOM_KEY, value=dict(figures))

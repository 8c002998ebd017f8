"""The estimate's defaults, apart from the estimator: operators use them in their signatures, so DAG files import them.

Keeping them here keeps parsing a DAG file from loading the estimator itself.
"""

from __future__ import annotations

#: Requests whose tokens are counted exactly, per model; batches up to this size are counted whole.
DEFAULT_SAMPLE_SIZE = 50
#: What a budget is compared with: the worst case (every max_tokens used) or the expected cost.
BUDGET_BASES = ("worst_case", "expected")
#: Seconds the model check (every page of GET /v1/models, and the lookup of an alias) may take in all,
#: retries included: a server that answers slowly, drips its answer or pages without end cannot hold a create longer.
MODEL_CHECK_SECONDS = 60.0
#: Seconds the estimate's token count (every count_tokens call of the sample) may take in all, retries included.
TOKEN_COUNT_SECONDS = 120.0

"""Every request shape users send passes every check without a server; every broken one is refused by name.

The paths here are the ones that run before anything is sent: the shared validator, the
emulator's fast intake (which must agree with it), the create's spool and the job's split
(file, line and custom_id in the refusal), and the cost estimate over a job's shard files
(``default_params`` with ``system`` and ``tools`` merged in). The corpus is both the
hand-written files under tests/data/request_shapes/ and Hypothesis' compositions of the
same shapes (tests/support/request_shapes.py). The real runs are in
tests/integration/test_request_shapes_paths.py.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from airflow.sdk import ObjectStoragePath
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_anthropix.api.errors import BatchValidationError
from airflow_provider_anthropix.api.validation import validate_request
from airflow_provider_anthropix.cost.estimate import CostTally, shared_prefix
from airflow_provider_anthropix.emulator.intake import fast_requests, params_of
from airflow_provider_anthropix.io.estimate_inputs import prefix_bytes, tally_shards
from airflow_provider_anthropix.io.requests_file import iter_jsonl, merge_defaults, spool_batch
from airflow_provider_anthropix.io.shards import ShardWriter, split_requests
from tests.support.request_shapes import (
    DEFAULT_SYSTEM_BLOCKS,
    DEFAULT_SYSTEM_STRING,
    DEFAULT_TOOLS,
    invalid_requests,
    large_request,
    load_invalid,
    load_valid,
    valid_requests,
)

VERSIONS = ("2026-10-21", "2023-06-01")
VALID = load_valid()
INVALID = load_invalid()
#: ``default_params`` of the jobs users write: a shared system prompt (string or cached blocks) and tools.
DEFAULTS = {
    "system-string": {"system": DEFAULT_SYSTEM_STRING, "tools": DEFAULT_TOOLS},
    "system-blocks": {"system": DEFAULT_SYSTEM_BLOCKS, "tools": DEFAULT_TOOLS},
    "tools-only": {"tools": DEFAULT_TOOLS},
    "system-string-only": {"system": DEFAULT_SYSTEM_STRING},
}
#: Bounded and repeatable: the same examples on every run, a few seconds in all.
PROPERTY = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fast_path_agrees(requests: list[dict[str, Any]], version: str) -> None:
    """The emulator's typed intake takes the body and builds what the generic path would."""
    fast = fast_requests(msgspec.json.encode({"requests": requests}), api_version=version, max_requests=100_000)
    assert fast is not None, "the emulator's fast intake refused a valid body"
    for request, typed in zip(requests, fast, strict=True):
        assert typed.custom_id == request["custom_id"]
        assert typed.params == params_of(request["params"])


def split_and_tally(requests: list[dict[str, Any]], default_params: dict[str, Any] | None) -> CostTally:
    """The job's path before the first create: split into shard files, then the estimate's tally over them."""
    files: dict[str, io.BytesIO] = {}

    class Kept(io.BytesIO):
        def close(self) -> None:  # keep the bytes readable after the writer closes the shard
            files[self.name] = io.BytesIO(self.getvalue())

    def open_shard(name: str) -> io.BytesIO:
        handle = Kept()
        handle.name = name
        return handle

    writer = ShardWriter(open_shard, "round-0", max_requests=7)
    items = [("mem.jsonl", n, r) for n, r in enumerate(requests, 1)]
    shards = split_requests(items, writer, api_version=VERSIONS[0], default_params=default_params)
    assert sum(s.requests for s in shards) == len(requests)
    tally = CostTally(5)
    prefix = shared_prefix(default_params)
    tally_shards(
        [(s.name, lambda name=s.name: io.BytesIO(files[name].getvalue())) for s in shards],
        tally,
        prefix=prefix_bytes(prefix.keys if prefix else (), default_params),
    )
    assert tally.requests == len(requests)
    return tally


# -- the hand-written corpus -------------------------------------------------------------------------


@pytest.mark.smoke
@pytest.mark.parametrize("version", VERSIONS)
def test_every_hand_written_shape_is_valid_and_the_emulator_takes_it(version: str) -> None:
    for request in VALID:
        assert validate_request(request, api_version=version) == [], request["custom_id"]
    fast_path_agrees(VALID, version)


def test_the_hand_written_corpus_covers_every_listed_shape() -> None:
    """A guard on the corpus itself: removing a shape from valid.jsonl fails here, not silently."""
    text = "\n".join(json.dumps(r) for r in VALID)
    for needle in (
        '"system": "',
        '"ttl": "1h"',
        '"strict": true',
        '"tool_choice": {"type": "auto"}',
        '"tool_choice": {"type": "any"}',
        '"tool_choice": {"type": "none"}',
        '"tool_choice": {"type": "tool"',
        '"type": "tool_use"',
        '"type": "tool_result"',
        *(f'"media_type": "image/{kind}"' for kind in ("png", "jpeg", "gif", "webp")),
        '"media_type": "application/pdf"',
        '"media_type": "text/plain"',
        '"source": {"type": "url"',
        '"budget_tokens"',
        '"thinking": {"type": "adaptive"}',
        '"type": "json_schema"',
        '"effort"',
        '"stop_sequences"',
        '"user_id"',
    ):
        assert needle in text, needle
    prefills = [r for r in VALID if r["params"]["messages"][-1]["role"] == "assistant"]
    assert prefills and all(len(r["params"]["messages"]) > 2 for r in prefills)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_a_job_split_and_estimate_with_system_and_tools_in_default_params(name: str) -> None:
    """The reported bug: a shard line holding ``system``/``tools`` broke the job's cost estimate."""
    default_params = DEFAULTS[name]
    # Requests without their own system/tools take the defaults; the others keep theirs.
    tally = split_and_tally([*VALID, large_request("big-scan")], default_params)
    prefix = shared_prefix(default_params)
    inherits = [
        r for r in [*VALID, large_request("big-scan")] if not set(prefix.keys if prefix else ()) & set(r["params"])
    ]
    sharing = sum(t.sharing for t in tally.models.values())
    assert sharing == (len(inherits) if prefix else 0)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["case"])
def test_every_hand_written_broken_shape_is_refused_naming_its_field(case: dict[str, Any]) -> None:
    problems = validate_request(case["request"], api_version=case["api_version"])
    assert any(case["field"] in p for p in problems), problems
    body = msgspec.json.encode({"requests": [VALID[0], case["request"]]})
    assert fast_requests(body, api_version=case["api_version"], max_requests=100) is None


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["case"])
def test_broken_shapes_in_a_file_name_file_line_and_custom_id_before_anything_is_sent(
    case: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(VALID[0]) + "\n" + json.dumps(case["request"]) + "\n")
    source = ObjectStoragePath(f"file://{path}")
    with pytest.raises(BatchValidationError) as spooled:
        spool_batch(iter_jsonl(source), api_version=case["api_version"], file=str(path))
    message = str(spooled.value)
    assert case["field"] in message
    assert f"{path}:2" in message
    custom_id = case["request"]["custom_id"]
    if validate_request({**case["request"], "params": VALID[0]["params"]}, api_version=case["api_version"]) == []:
        assert f"custom_id {custom_id}:" in message
    writer = ShardWriter(lambda name: io.BytesIO(), "round-0")
    items = ((str(path), line, request) for line, request in iter_jsonl(source))
    with pytest.raises(BatchValidationError) as split:
        split_requests(items, writer, api_version=case["api_version"])
    assert case["field"] in str(split.value) and f"{path}:2" in str(split.value)


# -- Hypothesis: the same shapes, composed at random ------------------------------------------------


@PROPERTY
@given(st.lists(valid_requests(), min_size=1, max_size=3, unique_by=lambda r: r["custom_id"]))
def test_any_composed_shape_is_valid_and_the_emulator_takes_it(requests: list[dict[str, Any]]) -> None:
    for version in VERSIONS:
        for request in requests:
            assert validate_request(request, api_version=version) == []
        fast_path_agrees(requests, version)


@PROPERTY
@given(
    st.lists(valid_requests(), min_size=1, max_size=3, unique_by=lambda r: r["custom_id"]),
    st.sampled_from(sorted(DEFAULTS)),
)
def test_any_composed_shape_splits_and_is_estimated_under_any_defaults(
    requests: list[dict[str, Any]], defaults: str
) -> None:
    default_params = DEFAULTS[defaults]
    merged = [merge_defaults(r, default_params) for r in requests]
    # A request that forces a tool keeps its own tools, so the merge never makes it invalid.
    assert all(validate_request(r, api_version=VERSIONS[0]) == [] for r in merged)
    split_and_tally(requests, default_params)


@PROPERTY
@given(invalid_requests())
def test_any_one_broken_thing_is_refused_naming_it(case: tuple[str, dict[str, Any], str]) -> None:
    name, request, field = case
    problems = validate_request(request, api_version=VERSIONS[0])
    assert any(field in p for p in problems), (name, problems)
    good = {
        "custom_id": "fine",
        "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    }
    body = msgspec.json.encode({"requests": [good, copy.deepcopy(request)]})
    assert fast_requests(body, api_version=VERSIONS[0], max_requests=100) is None, name

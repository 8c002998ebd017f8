"""The bad-input corpus (tests/data/bad_inputs/) through the real operators, sensor, trigger and hook.

Every input must end in an error that says what is wrong and where (file, line,
custom_id when there is one), as an ``AirflowFailException`` (Airflow does not retry: a
retry cannot fix the input), with nothing sent to the API and nothing written.

- ``requests/*.jsonl[.gz]`` are request files for ``CreateBatchOperator(requests_path=...)``;
  what each must produce is in ``requests/EXPECT.json``.
- ``cases/*.json`` describe the other inputs: generated files too big to keep in git
  (100,001 requests, a body over 256 MB, a 40 MB broken line), bad connections,
  destinations (also a create's ``results_destination``), batch ids, templates that render
  to None, for the create and fetch operators, the sensor and the trigger. A case marked
  ``"landed": true`` is an outcome policy on the fetch: the results must be published
  before the task fails ("land, then gate").

The operators run with ``execute()`` on a context carrying what they use (a task state
store, params for templates, which are rendered by Airflow's own ``render_template_fields``);
the same operators run end to end in ``dag.test()`` in the lifecycle and results tests,
and in a real deployment in ``scripts/e2e.sh``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor
from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger
from tests.support.airflow import DictStateStore
from tests.support.paths import DATA

CORPUS = DATA / "bad_inputs"
REQUEST_FILES = CORPUS / "requests"
EXPECT: dict[str, dict[str, Any]] = json.loads((REQUEST_FILES / "EXPECT.json").read_text())
CASES: dict[str, dict[str, Any]] = {
    p.stem: json.loads(p.read_text()) for p in sorted((CORPUS / "cases").glob("*.json"))
}
#: Longest acceptable error text: enough for ten problems, never a dump of the input.
MAX_MESSAGE = 4000

#: Known defects, reported to their owners; strict, so the marker must go once they are fixed.
KNOWN_BUGS: dict[str, str] = {}

KNOWN_CASE_BUGS: dict[str, str] = {}


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Send the create's temporary body files here, to check nothing is left behind."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    return spool


def _calls(emulator: EmulatorHandle) -> dict[str, int]:
    return {k: v for k, v in emulator.stats()["calls"].items() if v}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _set_connection(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any], emulator: EmulatorHandle, key: str) -> None:
    text = json.dumps(conn).replace("{emulator}", emulator.url).replace("{key}", key)
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", text)


def _check_error(message: str, key: str, expect: list[str], where: list[str]) -> None:
    for text in [*expect, *where]:
        assert text in message, f"{text!r} not in the error:\n{message}"
    assert len(message) <= MAX_MESSAGE, f"error text is {len(message)} chars: it repeats the input"
    assert key not in message


def _batch(emulator: EmulatorHandle, kind: str) -> str:
    """A batch in the state a case needs (created with the hook, outside the counted calls)."""
    params = {"model": "claude-haiku-4-5", "max_tokens": 8}
    text = "[[emulator:errored]] hi" if kind == "all_errored" else "hi"
    if kind == "in_progress":
        emulator.config.processing_seconds = 3600
    body = {**params, "messages": [{"role": "user", "content": text}]}
    batch = AnthropixHook().create_batch([{"custom_id": f"b-{i}", "params": body} for i in range(3)])
    if kind in ("ended", "all_errored"):
        emulator.advance(3600)
    elif kind == "archived":
        emulator.advance(30 * 86_400)
    return batch.id


# -- request files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_BUGS[n], strict=True)) if n in KNOWN_BUGS else n
        for n in sorted(EXPECT)
    ],
)
def test_request_file_is_refused_before_anything_is_sent(
    name: str, emulator: EmulatorHandle, anthropix_conn_env: str, emulator_api_key: str, spool_dir: Path
) -> None:
    case = EXPECT[name]
    path = REQUEST_FILES / name
    before = _calls(emulator)
    op = CreateBatchOperator(task_id="create", requests_path=str(path), default_params=case["default_params"])
    with pytest.raises(AirflowFailException) as info:
        op.execute({"task_state_store": DictStateStore()})  # type: ignore[arg-type]
    where = [f"{path}:{case['line']}"] if case.get("line") else [str(path)]
    if case.get("custom_id"):
        where.append(f"custom_id {case['custom_id']}")
    _check_error(str(info.value), emulator_api_key, case["expect"], where)
    assert _delta(_calls(emulator), before) == {}, "a bad request file reached the API"
    assert list(spool_dir.iterdir()) == [], "a temporary body file was left behind"


def test_every_request_file_has_an_expectation() -> None:
    files = {p.name for p in REQUEST_FILES.iterdir() if p.name != "EXPECT.json"}
    assert files == set(EXPECT)
    assert len(files) + len(CASES) >= 25


# -- other inputs -------------------------------------------------------------------------------


def _generate(case: dict[str, Any], tmp_path: Path) -> Path:
    """Write a generated request file (kept out of git: up to 270 MB)."""
    spec = case["generate"]
    path = tmp_path / "generated.jsonl"
    base = {"model": "claude-haiku-4-5", "max_tokens": 8}
    with path.open("wb") as out:
        if "broken_line_bytes" in spec:
            good = {"custom_id": "g-1", "params": {**base, "messages": [{"role": "user", "content": "hi"}]}}
            out.write(json.dumps(good).encode() + b"\n")
            out.write(b'{"custom_id": "g-2", "params": {"messages": [{"role": "user", "content": "')
            out.write(b"x" * spec["broken_line_bytes"] + b"\n")
        else:
            filler = "y" * spec.get("content_bytes", 0)
            for i in range(spec["requests"]):
                request = {"custom_id": f"g-{i}", "params": {**base, "messages": [{"role": "user", "content": filler}]}}
                out.write(json.dumps(request).encode() + b"\n")
    return path


def _render(op: Any, params: dict[str, Any]) -> None:
    """Render templated fields the way the task runner does before ``execute``."""
    op.render_template_fields({"params": params})


def _run_case(
    name: str, case: dict[str, Any], emulator: EmulatorHandle, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Run one case's component and return the error text (assertion error if it did not fail cleanly)."""
    component = case["component"]
    kwargs: dict[str, Any] = {
        k: (v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v) for k, v in case.get("operator", {}).items()
    }
    if component in ("fetch", "sensor") and "batch_id" not in kwargs:
        kwargs["batch_id"] = _batch(emulator, case.get("batch", "ended"))
    # The connection goes bad only now: the batch above was made with the good one.
    if "connection" in case:
        _set_connection(monkeypatch, case["connection"], emulator, key)
    if case.get("make_file"):
        (tmp_path / case["make_file"]).write_text("not a folder")
    if component == "create":
        if "generate" in case:
            kwargs["requests_path"] = str(_generate(case, tmp_path))
        if "requests_path" not in kwargs and "requests" not in kwargs:
            ok = {"custom_id": "q-1", "params": {"messages": [{"role": "user", "content": "hi"}]}}
            kwargs["requests"] = [ok]
        op: Any = CreateBatchOperator(
            task_id="create", default_params={"model": "claude-haiku-4-5", "max_tokens": 8}, **kwargs
        )
        context: dict[str, Any] = {"task_state_store": DictStateStore(), "params": case.get("params", {})}
    elif component == "fetch":
        kwargs.setdefault("destination", str(tmp_path / "out"))
        if case.get("at_parse"):
            with pytest.raises((ValueError, AirflowFailException)) as parse_error:
                FetchBatchResultsOperator(task_id="fetch", **kwargs)
            return str(parse_error.value)
        op = FetchBatchResultsOperator(task_id="fetch", **kwargs)
        context = {"params": case.get("params", {})}
    elif component == "sensor":
        op = BatchEndedSensor(task_id="wait", deferrable=True, poll_interval=1, **kwargs)
        context = {"params": case.get("params", {})}
    elif component == "trigger":
        kwargs.setdefault("batch_id", "msgbatch_x")
        trigger = BatchEndedTrigger(poll_interval=0.05, max_poll_failures=1, **kwargs)

        async def first_event() -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError("the trigger ended without an event")

        event = asyncio.run(first_event())
        assert event["status"] == "error", event
        assert trigger.serialize()[1] == json.loads(json.dumps(trigger.serialize()[1])), "kwargs are not plain JSON"
        return str(event["message"])
    else:
        raise AssertionError(f"{name}: unknown component {component!r}")
    if "params" in case:
        _render(op, case["params"])
    with pytest.raises(AirflowFailException) as info:
        op.execute(context)
    return str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_CASE_BUGS[n], strict=True)) if n in KNOWN_CASE_BUGS else n
        for n in sorted(CASES)
    ],
)
def test_bad_input_fails_clearly_without_retry_or_side_effects(
    name: str,
    emulator: EmulatorHandle,
    anthropix_conn_env: str,
    emulator_api_key: str,
    tmp_path: Path,
    spool_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = CASES[name]
    batches_before = emulator.stats()["batches_created"]
    message = _run_case(name, case, emulator, emulator_api_key, tmp_path, monkeypatch)
    expect = [e.replace("{tmp}", str(tmp_path)) for e in case["expect"]]
    _check_error(message, emulator_api_key, expect, [])
    stats = emulator.stats()
    if case["component"] in ("create",):
        allowed = case.get("api_calls", {})
        assert stats["batches_created"] == batches_before, "a bad input created a batch"
        sent = stats["calls"].get("create", 0) + stats["rejected"].get("create", 0)  # 401s count as rejected
        assert sent == allowed.get("create", 0)
    assert list(spool_dir.iterdir()) == [], "a temporary body file was left behind"
    out = tmp_path / "out"
    if case.get("landed"):
        # Land, then gate: the policy fails the task only after the results were published.
        assert stats["calls"].get("results", 0) == 1
        assert (out / "_manifest.json").is_file(), "the results were not landed before the gate"
        return
    assert stats["calls"].get("results", 0) == 0, "results were downloaded for a bad input"
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), "something was written"

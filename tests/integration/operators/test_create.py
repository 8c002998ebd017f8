"""CreateBatchOperator.execute() against the emulator: validation before HTTP, crash safety, lost answers.

These call ``execute`` directly with a small context (the state store is a dict-backed
stand-in with the real accessor's get/set/delete), which keeps them fast; the same paths run
through a real ``dag.test()`` with Airflow's own task state store in test_dag_lifecycle.py.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.operators.create import STATE_ATTEMPT, STATE_BATCH_ID, CreateBatchOperator
from tests.support.airflow import DictStateStore as FakeStateStore

KEY = "sk-ant-emulator-test-key"


def req(custom_id: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": f"question {custom_id}"}]}
    body.update(params)
    return {"custom_id": custom_id, "params": body}


DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 32}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    text = "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def api_calls(emulator: EmulatorHandle) -> int:
    return sum(emulator.stats()["calls"].values())


def run(op: CreateBatchOperator, store: FakeStateStore | None = None) -> str:
    context: dict[str, Any] = {} if store is None else {"task_state_store": store}
    return op.execute(context)  # type: ignore[arg-type]


BAD_REQUESTS = {
    "custom_id pattern": (req("no spaces allowed"), "custom_id 'no spaces allowed' is invalid"),
    "custom_id length": (req("x" * 65), "is invalid: use 1 to 64 characters"),
    "custom_id missing": ({"params": req("a")["params"]}, "custom_id is missing"),
    "params missing": ({"custom_id": "p"}, "params is missing"),
    "messages missing": ({"custom_id": "m", "params": {}}, "params.messages is missing"),
    "first role": (req("r", messages=[{"role": "assistant", "content": "hi"}]), "the first turn comes from the user"),
    "unknown role": (req("r", messages=[{"role": "system", "content": "hi"}]), "role must be 'user' or 'assistant'"),
    "stream": (req("s", stream=True), "params.stream is not allowed in a batch request"),
    "max_tokens type": (req("t", max_tokens="many"), "params.max_tokens must be an integer >= 1"),
    "temperature (version rule)": (
        req("v", temperature=0.2),
        "temperature is not accepted by API version 2026-10-21 (even at its default value); remove it or set "
        "the connection's anthropic_version to 2023-06-01",
    ),
    "extra field": ({**req("e"), "priority": 1}, "unexpected field 'priority'"),
}


@pytest.mark.smoke
@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_each_rule_fails_before_anything_reaches_the_api(
    case: str, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    bad, expected = BAD_REQUESTS[case]
    path = write_jsonl(tmp_path / "requests.jsonl", [req("fine-1"), req("fine-2"), bad])
    op = CreateBatchOperator(task_id="create", requests_path=str(path), default_params=DEFAULTS)
    with pytest.raises(AirflowFailException) as info:
        run(op, FakeStateStore())
    message = str(info.value)
    assert expected in message
    assert f"{path}:3" in message  # file and line
    if isinstance(bad.get("custom_id"), str) and " " not in bad["custom_id"] and len(bad["custom_id"]) <= 64:
        assert f"custom_id {bad['custom_id']}" in message
    assert api_calls(emulator) == 0


def test_batch_level_rules_also_fail_before_http(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    dup = write_jsonl(tmp_path / "dup.jsonl", [req("same"), req("other"), req("same")])
    with pytest.raises(AirflowFailException, match=r"dup.jsonl:3 custom_id same: custom_id is used more than once"):
        run(CreateBatchOperator(task_id="c", requests_path=str(dup), default_params=DEFAULTS))
    garbage = write_jsonl(tmp_path / "garbage.jsonl", [req("a"), "{oops"])
    with pytest.raises(AirflowFailException, match=r"garbage.jsonl:2: the line is not valid JSON"):
        run(CreateBatchOperator(task_id="c", requests_path=str(garbage), default_params=DEFAULTS))
    empty = write_jsonl(tmp_path / "empty.jsonl", [""])
    with pytest.raises(AirflowFailException, match="the batch has no requests"):
        run(CreateBatchOperator(task_id="c", requests_path=str(empty)))
    with pytest.raises(AirflowFailException, match="does not exist"):
        run(CreateBatchOperator(task_id="c", requests_path=str(tmp_path / "missing.jsonl")))
    assert api_calls(emulator) == 0


def test_many_bad_lines_show_the_first_few_and_the_count(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    # Distinct problems (each max_tokens differs), so none are grouped: the first 10 and a count.
    rows = [req(f"bad-{i}", max_tokens=-i) for i in range(250)]
    path = write_jsonl(tmp_path / "many.jsonl.gz", rows)
    with pytest.raises(AirflowFailException) as info:
        run(CreateBatchOperator(task_id="c", requests_path=f"file://{path}", default_params=DEFAULTS))
    message = str(info.value)
    assert message.startswith("250 problems in the batch requests, nothing was sent")
    assert "custom_id bad-0: params.max_tokens must be an integer >= 1; got 0" in message
    assert "custom_id bad-9: params.max_tokens" in message
    assert "bad-10:" not in message
    assert "... and 240 more" in message
    assert api_calls(emulator) == 0


@pytest.mark.smoke
def test_valid_file_creates_one_batch_and_returns_its_id(
    emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "ok.jsonl.gz", [req(f"q-{i}") for i in range(40)])
    store = FakeStateStore()
    batch_id = run(CreateBatchOperator(task_id="c", requests_path=f"file://{path}", default_params=DEFAULTS), store)
    assert batch_id.startswith("msgbatch_")
    assert emulator.stats()["batches_created"] == 1
    batch = AnthropixHook().get_batch(batch_id)
    assert batch.request_counts.total == 40
    assert store.data == {STATE_BATCH_ID: batch_id}
    out = capsys.readouterr().out
    assert f"Created batch {batch_id} with 40 requests" in out
    assert KEY not in out


def test_requests_list_and_legacy_version_connection(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "anthropix",
        "password": KEY,
        "host": emulator.url,
        "extra": {"anthropic_version": "2023-06-01"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_LEGACY", json.dumps(conn))
    requests = [req("a", temperature=0.3), req("b", top_k=5)]
    batch_id = run(
        CreateBatchOperator(task_id="c", requests=requests, default_params=DEFAULTS, anthropix_conn_id="legacy")
    )
    assert AnthropixHook("legacy").get_batch(batch_id).request_counts.total == 2
    # the same requests through a current-version connection are stopped locally
    monkeypatch.setenv("AIRFLOW_CONN_CURRENT", json.dumps({**conn, "extra": {}}))
    with pytest.raises(AirflowFailException, match=r"requests\[0\] custom_id a: params.temperature"):
        run(CreateBatchOperator(task_id="c", requests=requests, default_params=DEFAULTS, anthropix_conn_id="current"))
    assert emulator.stats()["batches_created"] == 1


def test_a_retry_reuses_the_recorded_batch(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    store = FakeStateStore()
    requests = [req(f"r{i}") for i in range(3)]
    first = run(CreateBatchOperator(task_id="c", requests=requests, default_params=DEFAULTS), store)
    second = run(CreateBatchOperator(task_id="c", requests=requests, default_params=DEFAULTS), store)
    assert first == second
    assert emulator.stats()["batches_created"] == 1


def test_lost_answer_adopts_the_single_matching_batch(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    AnthropixHook().create_batch([{**req("other"), "params": {**DEFAULTS, **req("other")["params"]}}])  # 1 request
    emulator.add_fault("drop", endpoint="create")  # the batch is created, the answer never arrives
    store = FakeStateStore()
    op = CreateBatchOperator(task_id="c", requests=[req(f"r{i}") for i in range(4)], default_params=DEFAULTS)
    batch_id = run(op, store)
    assert emulator.stats()["batches_created"] == 2  # the decoy with 1 request, and ours: no resend
    assert emulator.stats()["calls"]["create"] == 2
    assert AnthropixHook().get_batch(batch_id).request_counts.total == 4
    assert store.data == {STATE_BATCH_ID: batch_id}


def test_a_garbled_create_answer_adopts_the_batch_instead_of_sending_again(
    emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    emulator.add_fault("garble", endpoint="create", count=1)  # created, but the 200 is half a JSON object
    store = FakeStateStore()
    op = CreateBatchOperator(task_id="c", requests=[req(f"r{i}") for i in range(3)], default_params=DEFAULTS)
    batch_id = run(op, store)
    assert emulator.stats()["batches_created"] == 1  # adopted, not sent again
    assert emulator.stats()["calls"]["create"] == 1
    assert AnthropixHook().get_batch(batch_id).request_counts.total == 3
    assert store.data == {STATE_BATCH_ID: batch_id}


def test_a_garbled_create_answer_with_no_batch_to_adopt_fails_without_sending_again(
    emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    emulator.add_fault("garble", endpoint="create", count=1)
    emulator.add_fault("status", endpoint="list", status=200, count=None)  # the list never shows it
    op = CreateBatchOperator(
        task_id="c",
        requests=[req(f"r{i}") for i in range(3)],
        default_params=DEFAULTS,
        lost_response_checks=1,
        lost_response_check_interval=0,
    )
    store = FakeStateStore()
    with pytest.raises(AirflowException):  # the first round of looks: retryable, looks again
        run(op, store)
    with pytest.raises(AirflowFailException, match="not sent again automatically"):
        run(op, store)
    assert emulator.stats()["calls"]["create"] == 1


def test_lost_answer_with_two_candidates_fails_and_names_them(
    emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    requests = [req(f"r{i}") for i in range(2)]
    decoy = AnthropixHook().create_batch([{**r, "params": {**DEFAULTS, **r["params"]}} for r in requests]).id
    emulator.add_fault("drop", endpoint="create")
    op = CreateBatchOperator(task_id="c", requests=requests, default_params=DEFAULTS, lost_response_checks=1)
    with pytest.raises(AirflowFailException) as info:
        run(op, FakeStateStore())
    assert "2 batches with 2 requests were created" in str(info.value)
    assert decoy in str(info.value)
    assert emulator.stats()["batches_created"] == 2


def test_lost_request_that_never_landed_is_sent_again_by_the_next_try(
    emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    emulator.add_fault("reset", endpoint="create")  # the connection dies before the server acts
    store = FakeStateStore()
    requests = [req(f"r{i}") for i in range(2)]
    op = CreateBatchOperator(
        task_id="c", requests=requests, default_params=DEFAULTS, lost_response_checks=2, lost_response_check_interval=0
    )
    with pytest.raises(AirflowException, match="most likely never reached the API") as info:
        run(op, store)
    assert not isinstance(info.value, AirflowFailException)  # Airflow's retries may send it again
    assert "looks once more before sending" in str(info.value)
    assert emulator.stats()["batches_created"] == 0
    assert store.data[STATE_ATTEMPT]["looked"] is True  # the next try looks again first
    # Airflow's retry: a second round of looks finds nothing either, so this try sends it
    batch_id = run(CreateBatchOperator(task_id="c", requests=requests, default_params=DEFAULTS), store)
    assert emulator.stats()["batches_created"] == 1
    assert store.data == {STATE_BATCH_ID: batch_id}


def test_crash_during_create_is_recovered_by_the_next_try(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    requests = [req(f"r{i}") for i in range(5)]
    created = AnthropixHook().create_batch([{**r, "params": {**DEFAULTS, **r["params"]}} for r in requests]).id
    # what a worker that died inside the create call leaves behind: an attempt without a batch id
    store = FakeStateStore()
    store.set(STATE_ATTEMPT, {"started_at": pendulum.now("UTC").subtract(seconds=2).isoformat(), "request_count": 5})
    assert run(CreateBatchOperator(task_id="c", requests=requests, default_params=DEFAULTS), store) == created
    assert emulator.stats()["batches_created"] == 1


@pytest.mark.smoke
def test_wrong_key_fails_without_retries_and_without_the_key(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "anthropix", "password": "sk-very-secret-wrong", "host": emulator.url}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", json.dumps(conn))
    with pytest.raises(AirflowFailException) as info:
        run(CreateBatchOperator(task_id="c", requests=[req("a")], default_params=DEFAULTS), FakeStateStore())
    assert "401" in str(info.value)
    assert "Check the API key" in str(info.value)
    assert "sk-very-secret-wrong" not in str(info.value)
    assert emulator.stats()["rejected"] == {"models": 1}  # the model check is the first call; no create


def test_cancel_on_kill(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.config.processing_seconds = 600
    keep = CreateBatchOperator(task_id="c", requests=[req("a")], default_params=DEFAULTS)
    run(keep)
    keep.on_kill()
    assert "cancel" not in emulator.stats()["calls"]
    cancel = CreateBatchOperator(task_id="c", requests=[req("a")], default_params=DEFAULTS, cancel_on_kill=True)
    batch_id = run(cancel)
    cancel.on_kill()
    assert AnthropixHook().get_batch(batch_id).cancel_initiated_at is not None


def test_exactly_one_input_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one of requests and requests_path"):
        CreateBatchOperator(task_id="c")
    with pytest.raises(ValueError, match="exactly one"):
        CreateBatchOperator(task_id="c", requests=[], requests_path="x.jsonl")


@pytest.mark.parametrize("case", ["non_utf8", "not_gzip", "truncated_gzip", "blank_only", "unknown_scheme"])
def test_unreadable_inputs_fail_naming_the_file_before_http(
    case: str, emulator: EmulatorHandle, anthropix_conn_env: str, tmp_path: Path
) -> None:
    good = json.dumps(req("a")).encode() + b"\n"
    if case == "non_utf8":
        path = tmp_path / "latin1.jsonl"
        path.write_bytes(good + b'{"custom_id": "b\xe9", "params": {}}\n')
        expected = f"{path}:2: the line is not UTF-8 text"
    elif case == "not_gzip":
        path = tmp_path / "plain.jsonl.gz"
        path.write_bytes(good)
        expected = "is not a readable gzip file"
    elif case == "truncated_gzip":
        path = tmp_path / "cut.jsonl.gz"
        path.write_bytes(gzip.compress(good * 200)[:-40])
        expected = "is not a readable gzip file"
    elif case == "blank_only":
        path = tmp_path / "blank.jsonl"
        path.write_text("\n\n  \n")
        expected = f"{path}: the batch has no requests"
    else:
        path = tmp_path / "x.jsonl"
        expected = "unusable requests_path"
    uri = f"nosuchscheme://bucket/{path.name}" if case == "unknown_scheme" else str(path)
    with pytest.raises(AirflowFailException) as info:
        run(CreateBatchOperator(task_id="c", requests_path=uri, default_params=DEFAULTS), FakeStateStore())
    assert expected in str(info.value)
    assert path.name in str(info.value)
    assert api_calls(emulator) == 0


def test_an_old_pending_attempt_never_adopts_a_later_batch_of_the_same_size(
    emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    """A create task cleared days after its worker died must not take over another night's batch."""
    requests = [req(f"q{i}") for i in range(5)]
    tonight = AnthropixHook().create_batch([{**r, "params": {**DEFAULTS, **r["params"]}} for r in requests]).id
    store = FakeStateStore()
    two_days_ago = pendulum.now("UTC").subtract(days=2).isoformat()
    store.set(STATE_ATTEMPT, {"started_at": two_days_ago, "request_count": 5, "body_bytes": 2_000})
    op = CreateBatchOperator(
        task_id="c", requests=requests, default_params=DEFAULTS, lost_response_checks=1, lost_response_check_interval=0
    )
    with pytest.raises(AirflowException, match="no batch with 5 requests was created") as info:
        run(op, store)
    assert tonight not in str(info.value)
    assert STATE_BATCH_ID not in store.data
    assert emulator.stats()["batches_created"] == 1


def test_lost_answer_with_adoption_off_fails_without_retries(emulator: EmulatorHandle, anthropix_conn_env: str) -> None:
    emulator.add_fault("drop", endpoint="create", count=1)
    op = CreateBatchOperator(task_id="c", requests=[req("a")], default_params=DEFAULTS, lost_response_checks=0)
    store = FakeStateStore()
    with pytest.raises(AirflowFailException, match="adopting a batch is off"):
        run(op, store)
    assert "list" not in emulator.stats()["calls"]
    assert STATE_ATTEMPT in store.data  # a retry or a clear must not send it blindly
    assert emulator.stats()["batches_created"] == 1


def test_a_slow_batch_that_shows_up_late_is_adopted_by_the_next_try(
    emulator: EmulatorHandle, anthropix_conn_env: str
) -> None:
    """The first round of looks misses a batch that appears later: the retry finds it instead of paying twice."""
    requests = [req(f"s{i}") for i in range(3)]
    store = FakeStateStore()
    emulator.add_fault("reset", endpoint="create")
    op = CreateBatchOperator(
        task_id="c", requests=requests, default_params=DEFAULTS, lost_response_checks=1, lost_response_check_interval=0
    )
    with pytest.raises(AirflowException, match="looks once more"):
        run(op, store)
    # meanwhile the create shows up after all (as a slow, large create would)
    late = AnthropixHook().create_batch([{**r, "params": {**DEFAULTS, **r["params"]}} for r in requests]).id
    assert run(CreateBatchOperator(task_id="c", requests=requests, default_params=DEFAULTS), store) == late
    assert emulator.stats()["batches_created"] == 1

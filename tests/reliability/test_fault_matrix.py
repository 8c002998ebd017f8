"""The fault matrix of docs/reliability.md: each fault x each component, run for real against the emulator.

Components: ``create`` (CreateBatchOperator.execute, with a task state store), ``trigger``
(BatchEndedTrigger.run, first event), ``poke`` (BatchEndedSensor.poke, the sync modes and the
check a deferrable sensor makes before deferring) and ``fetch`` (FetchBatchResultsOperator.execute).
Faults are armed in the emulator (HTTP status, TCP reset, latency past the read timeout,
dropped answer, stream cut) or are real states (a wrong key, an unknown id, an expired,
canceled or archived batch, a file-size limit set with ``RLIMIT_FSIZE`` so the kernel
refuses writes: what a full disk looks like to the writer).

Each cell asserts the behaviour the table states: the outcome (survived, failed with or
without Airflow retries), the number of batches created, and for fetch that the results
written are byte-identical to a fault-free download. ``ANTHROPIX_MATRIX_OUT=path`` writes
the observed cells as JSON (how the table's figures were produced).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.hooks.anthropix import AnthropixHook
from airflow_provider_anthropix.operators.create import STATE_BATCH_ID, CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator
from airflow_provider_anthropix.sensors.batch import BatchEndedSensor
from airflow_provider_anthropix.triggers.batch import BatchEndedTrigger
from tests.support.airflow import DictStateStore

DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 16}
#: read timeout of the "timeout" cells; the armed latency is three times longer
READ_TIMEOUT = 0.5
OBSERVED: list[dict[str, Any]] = []


@dataclass
class Env:
    """What a cell gets: the emulator, a way to set the connection, a scratch folder."""

    emulator: EmulatorHandle
    key: str
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def connect(self, key: str | None = None, **extra: Any) -> None:
        conn = {"conn_type": "anthropix", "password": key or self.key, "host": self.emulator.url, "extra": extra}
        self.monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", json.dumps(conn))

    def batches(self) -> int:
        return int(self.emulator.stats()["batches_created"])

    def calls(self, endpoint: str) -> int:
        stats = self.emulator.stats()  # calls refused by the key check count as rejected, not calls
        return int(stats["calls"].get(endpoint, 0) + stats["rejected"].get(endpoint, 0))

    def batch(self, n: int = 3, *, state: str = "ended", text: str = "hi") -> str:
        """A batch made outside the counted behaviour, in the state the cell needs."""
        if state in ("in_progress", "expired", "canceled"):
            # longer than the 24 h expiry, so advancing the clock past it expires the requests
            self.emulator.config.processing_seconds = 3 * 86_400
        body = {**DEFAULTS, "messages": [{"role": "user", "content": text}]}
        batch_id = AnthropixHook().create_batch([{"custom_id": f"m-{i}", "params": body} for i in range(n)]).id
        if state == "ended":
            self.emulator.advance(3600)
        elif state == "expired":
            self.emulator.advance(24 * 3600 + 1)
        elif state == "canceled":
            AnthropixHook().cancel_batch(batch_id)
            self.emulator.advance(60)
        elif state == "archived":
            self.emulator.advance(30 * 86_400)
        return batch_id


FAULTS: dict[str, dict[str, Any]] = {
    "429": {"kind": "status", "status": 429, "retry_after": 0.2},
    "500": {"kind": "status", "status": 500},
    "529": {"kind": "status", "status": 529},
    "reset": {"kind": "reset"},
    "timeout": {"kind": "latency", "seconds": 3 * READ_TIMEOUT},
    "lost-response": {"kind": "drop"},
    "404": {"kind": "status", "status": 404},
}
TRANSIENT = ("429", "500", "529", "reset", "timeout", "lost-response")


def arm(env: Env, fault: str, endpoint: str, count: int | None = 1, **more: Any) -> None:
    env.emulator.add_fault(**{**FAULTS[fault], "endpoint": endpoint, "count": count, **more})
    if fault == "timeout":
        env.connect(timeout=[2.0, READ_TIMEOUT])


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Make the kernel refuse to grow any file past ``limit`` bytes (EFBIG): a full disk, for the writer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def create_op(**kwargs: Any) -> CreateBatchOperator:
    requests = [
        {"custom_id": f"r-{i}", "params": {"messages": [{"role": "user", "content": f"q{i}"}]}} for i in range(3)
    ]
    options = {"lost_response_checks": 6, "lost_response_check_interval": 0.4, **kwargs}
    return CreateBatchOperator(task_id="create", requests=requests, default_params=DEFAULTS, **options)


def run_create(op: CreateBatchOperator, store: DictStateStore) -> str:
    return op.execute({"task_state_store": store})  # type: ignore[arg-type]


# -- create ----------------------------------------------------------------------------------------


def create_cell(fault: str) -> Callable[[Env], str]:
    def cell(env: Env) -> str:
        store = DictStateStore()
        arm(env, fault, "create")
        if fault in ("429", "529"):
            run_create(create_op(), store)
            assert env.batches() == 1 and env.calls("create") == 2
            return "survived: the API did not act, the client resends after retry-after/backoff; 1 batch"
        if fault in ("timeout", "lost-response"):
            batch_id = run_create(create_op(), store)
            assert env.batches() == 1 and env.calls("create") == 1 and store.data == {STATE_BATCH_ID: batch_id}
            return "survived: not resent; the batch is found by listing and adopted; 1 batch"
        if fault in ("500", "reset"):
            with pytest.raises(AirflowException) as info:
                run_create(create_op(lost_response_checks=2, lost_response_check_interval=0.1), store)
            assert not isinstance(info.value, AirflowFailException)
            assert env.batches() == 0 and "never reached the API" in str(info.value)
            run_create(create_op(), store)  # Airflow's retry
            assert env.batches() == 1
            return "survived: not resent blindly; listing finds no batch, the task fails retryable; the retry creates 1 batch"
        if fault == "404":
            with pytest.raises(AirflowFailException):
                run_create(create_op(), store)
            assert env.batches() == 0
            return "fails, no retry (AirflowFailException); 0 batches"
        raise AssertionError(fault)

    return cell


def create_401(env: Env) -> str:
    env.connect(key="sk-ant-wrong-key")
    with pytest.raises(AirflowFailException, match="401"):
        run_create(create_op(), DictStateStore())
    assert env.batches() == 0
    return "fails, no retry, names the key field; 0 batches"


def create_recorded_expired(env: Env) -> str:
    batch_id = env.batch(3, state="expired")
    store = DictStateStore()
    store.set(STATE_BATCH_ID, batch_id)
    assert run_create(create_op(), store) == batch_id
    assert env.batches() == 1
    return "a retry reuses the recorded batch (its requests are reported expired downstream); no new batch"


def create_recorded_canceled(env: Env) -> str:
    batch_id = env.batch(3, state="canceled")
    store = DictStateStore()
    store.set(STATE_BATCH_ID, batch_id)
    new_id = run_create(create_op(), store)
    assert new_id != batch_id and env.batches() == 2 and store.data[STATE_BATCH_ID] == new_id
    return "a retry that finds its recorded batch canceled creates a new one (logged)"


def create_spool_disk_full(env: Env) -> str:
    spool = env.tmp / "spool"
    spool.mkdir()
    env.monkeypatch.setattr(tempfile, "tempdir", str(spool))
    big = "x" * 20_000
    requests = [{"custom_id": f"r-{i}", "params": {"messages": [{"role": "user", "content": big}]}} for i in range(200)]
    op = CreateBatchOperator(task_id="create", requests=requests, default_params=DEFAULTS)
    with file_size_limit(1 << 20), pytest.raises(Exception) as info:
        run_create(op, DictStateStore())
    assert env.calls("create") == 0 and list(spool.iterdir()) == []
    kind = "fails, no retry" if isinstance(info.value, AirflowFailException) else "fails, retryable"
    return f"{kind} ({type(info.value).__name__}: {str(info.value)[:60]}...); nothing sent, temporary body removed"


# -- trigger ---------------------------------------------------------------------------------------


def first_event(batch_id: str, **kwargs: Any) -> dict[str, Any]:
    trigger = BatchEndedTrigger(batch_id=batch_id, poll_interval=0.05, **kwargs)

    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(run())


def trigger_cell(fault: str) -> Callable[[Env], str]:
    def cell(env: Env) -> str:
        batch_id = env.batch(3)
        if fault == "404":
            event = first_event("msgbatch_unknown", max_poll_failures=3)
            assert event["status"] == "error" and "not found" in event["message"].lower()
            return "error event at once (not transient), naming the batch"
        # Three in a row: more than one poll's client retries (2), so the trigger's own tolerance is used.
        arm(env, fault, "retrieve", count=3)
        event = first_event(batch_id, max_poll_failures=5)
        assert event["status"] == "success", event
        assert env.emulator.stats()["faults"] == []
        return "survived: client retries, then the trigger polls again (failures tolerated: 5); success event"

    return cell


def trigger_persistent(env: Env) -> str:
    batch_id = env.batch(3)
    arm(env, "500", "retrieve", count=None)
    event = first_event(batch_id, max_poll_failures=2)
    assert event["status"] == "error" and "3 times in a row" in event["message"]
    return "error event after max_poll_failures consecutive failed polls"


def trigger_401(env: Env) -> str:
    batch_id = env.batch(3)
    env.connect(key="sk-ant-wrong-key")
    event = first_event(batch_id, max_poll_failures=5)
    assert event["status"] == "error" and "401" in event["message"]
    assert env.calls("retrieve") == 1
    return "error event at once, no further polls"


def trigger_state(state: str) -> Callable[[Env], str]:
    def cell(env: Env) -> str:
        batch_id = env.batch(3, state=state)
        event = first_event(batch_id)
        assert event["status"] == "success" and event["batch"]["processing_status"] == "ended"
        counts = event["batch"]["request_counts"]
        if state in ("expired", "canceled"):
            assert counts[state] >= 1
        else:
            assert event["batch"]["archived_at"]
        if state == "archived":
            return "success event (ended, archived_at set): waiting does not need the results"
        return f"success event (ended; {state} counts in the event); the sensor's policy decides"

    return cell


# -- sensor poke -----------------------------------------------------------------------------------


def sensor(batch_id: str, **kwargs: Any) -> BatchEndedSensor:
    return BatchEndedSensor(task_id="wait", batch_id=batch_id, deferrable=False, poll_interval=1, **kwargs)


def poke_cell(fault: str) -> Callable[[Env], str]:
    def cell(env: Env) -> str:
        batch_id = env.batch(3)
        if fault == "404":
            with pytest.raises(AirflowFailException, match="msgbatch_unknown"):
                sensor("msgbatch_unknown").poke({})  # type: ignore[arg-type]
            return "fails, no retry, naming the batch"
        arm(env, fault, "retrieve", count=3)
        assert sensor(batch_id).poke({}) is False  # type: ignore[arg-type]
        done = sensor(batch_id).poke({})  # type: ignore[arg-type]
        assert getattr(done, "is_done", False)
        return "survived: that poke reports 'not yet' (logged), the next poke succeeds"

    return cell


def poke_401(env: Env) -> str:
    batch_id = env.batch(3)
    env.connect(key="sk-ant-wrong-key")
    with pytest.raises(AirflowFailException, match="Check the API key"):
        sensor(batch_id).poke({})  # type: ignore[arg-type]
    return "fails, no retry, names the key field"


def poke_state(state: str) -> Callable[[Env], str]:
    def cell(env: Env) -> str:
        batch_id = env.batch(3, state=state)
        if state == "archived":
            assert getattr(sensor(batch_id).poke({}), "is_done", False)  # type: ignore[arg-type]
            return "done (waiting does not need results)"
        assert getattr(sensor(batch_id).poke({}), "is_done", False)  # type: ignore[arg-type]
        with pytest.raises(AirflowFailException, match=f"{state}"):
            sensor(batch_id, **{f"fail_on_{state}": True}).poke({})  # type: ignore[arg-type]
        return f"done by default; fails without retry with fail_on_{state}=True, giving the counts"

    return cell


# -- fetch -----------------------------------------------------------------------------------------


def fetch(env: Env, batch_id: str, destination: Path | None = None) -> dict[str, Any]:
    op = FetchBatchResultsOperator(task_id="fetch", batch_id=batch_id, destination=str(destination or env.tmp / "out"))
    return op.execute({})  # type: ignore[arg-type]


def written(summary: dict[str, Any]) -> bytes:
    return b"".join(Path(uri.removeprefix("file://")).read_bytes() for uri in summary["files"])


def fetch_cell(fault: str) -> Callable[[Env], str]:
    def cell(env: Env) -> str:
        batch_id = env.batch(50)
        reference = b"".join(AnthropixHook().iter_result_bytes(batch_id))
        if fault == "404":
            with pytest.raises(AirflowFailException, match="not found"):
                fetch(env, "msgbatch_unknown")
            return "fails, no retry, naming the batch; nothing written"
        if fault == "cut":
            env.emulator.add_fault("cut", endpoint="results", after_bytes=len(reference) // 3, count=2)
        else:
            arm(env, fault, "results")
        summary = fetch(env, batch_id)
        assert written(summary) == reference and summary["complete"]
        assert env.emulator.stats()["faults"] == []
        return "survived: the download is retried/resumed (Range); results byte-identical, manifest complete"

    return cell


def fetch_401(env: Env) -> str:
    batch_id = env.batch(3)
    env.connect(key="sk-ant-wrong-key")
    with pytest.raises(AirflowFailException, match="401"):
        fetch(env, batch_id)
    return "fails, no retry, names the key field; nothing written"


def fetch_state(state: str) -> Callable[[Env], str]:
    def cell(env: Env) -> str:
        batch_id = env.batch(3, state=state)
        if state == "archived":
            with pytest.raises(AirflowFailException, match="archived"):
                fetch(env, batch_id)
            assert not (env.tmp / "out" / "_manifest.json").exists()
            return "fails, no retry: results archived (kept 29 days); nothing written"
        summary = fetch(env, batch_id)
        assert summary["counts"].get(state, 0) >= 1 and summary["lines"] == 3 and summary["complete"]
        return f"fetched: one line per request, {state} lines counted in the manifest"

    return cell


def fetch_disk_full(env: Env) -> str:
    batch_id = env.batch(2000)
    out = env.tmp / "out"
    with file_size_limit(256 << 10), pytest.raises(Exception) as info:
        fetch(env, batch_id, out)
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert leftovers == [], f"a failed fetch left {leftovers}"
    kind = "fails, no retry" if isinstance(info.value, AirflowFailException) else "fails, retryable"
    kind += f" ({type(info.value).__name__}: {info.value})"
    summary = fetch(env, batch_id, out)  # the retry, with space again
    assert summary["complete"] and written(summary) == b"".join(AnthropixHook().iter_result_bytes(batch_id))
    return f"{kind}; staging removed, no manifest; the retry publishes complete results"


NA = "n/a"
CELLS: dict[tuple[str, str], Callable[[Env], str]] = {}
for _fault in ("429", "500", "529", "reset", "timeout", "lost-response", "404"):
    CELLS[("create", _fault)] = create_cell(_fault)
    CELLS[("trigger", _fault)] = trigger_cell(_fault)
    CELLS[("poke", _fault)] = poke_cell(_fault)
    CELLS[("fetch", _fault)] = fetch_cell(_fault)
CELLS.update(
    {
        ("create", "401"): create_401,
        ("trigger", "401"): trigger_401,
        ("poke", "401"): poke_401,
        ("fetch", "401"): fetch_401,
        ("create", "expired"): create_recorded_expired,
        ("create", "canceled"): create_recorded_canceled,
        ("create", "disk-full"): create_spool_disk_full,
        ("trigger", "500-forever"): trigger_persistent,
        ("fetch", "cut"): fetch_cell("cut"),
        ("fetch", "disk-full"): fetch_disk_full,
    }
)
for _state in ("expired", "canceled", "archived"):
    CELLS[("trigger", _state)] = trigger_state(_state)
    CELLS[("poke", _state)] = poke_state(_state)
    CELLS[("fetch", _state)] = fetch_state(_state)

#: Defects found by this matrix, reported to their owner; strict: the marker must go when fixed.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize(
    ("component", "fault"),
    [
        pytest.param(c, f, marks=pytest.mark.xfail(reason=KNOWN_BUGS[(c, f)], strict=True))
        if (c, f) in KNOWN_BUGS
        else (c, f)
        for c, f in sorted(CELLS)
    ],
)
def test_cell(
    component: str,
    fault: str,
    emulator: EmulatorHandle,
    emulator_api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = Env(emulator, emulator_api_key, tmp_path, monkeypatch)
    env.connect()
    observed = CELLS[(component, fault)](env)
    OBSERVED.append({"component": component, "fault": fault, "observed": observed})
    target = os.environ.get("ANTHROPIX_MATRIX_OUT")
    if target:
        Path(target).write_text(json.dumps(OBSERVED, indent=1))

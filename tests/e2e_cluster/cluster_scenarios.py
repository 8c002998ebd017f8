"""The scenarios ``tests/e2e_cluster/run.py`` runs against the cluster.

Built on ``tests/e2e/scenarios.py``: its :class:`Scenario`, its :class:`Context` (the run
bookkeeping, the secret scans) and its checks (manifests, results against the emulator's
fault-free stream, the batch job's merged result), which read what the tasks wrote through
the deployment, here from the S3 server. What is added: several runs in flight at once, and
faults that hit the cluster's own parts.

Batches take an hour in this emulator (``PROCESSING_SECONDS``); a scenario ends them when
it is ready by moving the emulator's clock (:meth:`ClusterDeployment.end_batches`), so every
wait is exactly as long as the scenario needs, whatever the load of the machine.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pendulum
import requests
from cluster import JOB_REQUESTS, TRIGGERERS, WORKERS, ClusterDeployment
from deployment import E2EFailure, say
from scenarios import (
    CHAOS_DAG,
    CHAOS_HOLD_MARKER,
    JOB_DAG,
    NIGHTLY_DAG,
    Context,
    Scenario,
    chaos_dag,
    check_fetch,
    check_job_output,
    check_nightly_run,
    example_dags,
)

LOAD_DAG = "anthropix_cluster_load"
TERMINAL = ("success", "failed")
TASKS = ("create_batch", "wait_for_batch", "fetch_results")


def cluster_dep(ctx: Context) -> ClusterDeployment:
    assert isinstance(ctx.dep, ClusterDeployment)
    return ctx.dep


class ClusterContext(Context):
    """The e2e context; its secret scan also reads every object in the S3 server."""

    def final_checks(self, results: list[dict[str, Any]]) -> None:
        super().final_checks(results)
        dep = cluster_dep(self)
        keys = dep.s3_keys()
        scanned, hits = 0, []
        for key in keys:
            data = dep.read_bytes(dep.s3_uri(key))
            scanned += len(data)
            if self.api_key.encode() in data or self.key_fragment.encode() in data:
                hits.append(key)
        if hits:
            raise E2EFailure(f"the API key leaked into S3 objects: {hits}")
        results[-1]["s3_objects_scanned"] = len(keys)
        results[-1]["s3_bytes_scanned"] = scanned
        expect_no_leak(self)


#: checks a finished run (by its run id) and returns what it found
Check = Callable[[Context, str], dict[str, Any]]


# -- runs --------------------------------------------------------------------------------------
@dataclass
class Run:
    dag_id: str
    run_id: str
    check: Check
    batches: Callable[[dict[str, Any]], int] = lambda _outcome: 1
    outcome: dict[str, Any] = field(default_factory=dict)


def cluster_run(ctx: Context, name: str, requests_count: int, crash: str = "") -> Run:
    """A run of the chaos DAG (``crash``: see the DAG) with its files in S3."""
    conf = {"output": cluster_dep(ctx).s3_uri("cluster", name), "requests": requests_count, "crash": crash}
    run_id = ctx.trigger(CHAOS_DAG, conf)

    def check(c: Context, rid: str) -> dict[str, Any]:
        return check_fetch(c, c.dep.xcom(CHAOS_DAG, rid, "fetch_results"), requests_count)

    return Run(CHAOS_DAG, run_id, check)


def finish(ctx: Context, runs: list[Run], timeout: float = 420, tick: float = 6.0) -> list[dict[str, Any]]:
    """Wait for every run to end, ending the emulator's batches every ``tick`` seconds; check each."""
    dep = cluster_dep(ctx)
    t0 = time.monotonic()
    deadline = t0 + timeout
    states: dict[tuple[str, str], str] = {}
    last_tick = 0.0
    while len(states) < len(runs):
        dep.check_processes()
        if time.monotonic() - last_tick >= tick:
            dep.end_batches(quiet=last_tick > 0)
            last_tick = time.monotonic()
        for run in runs:
            if (run.dag_id, run.run_id) not in states:
                try:
                    state = dep.run_state(run.dag_id, run.run_id)
                except (requests.RequestException, E2EFailure) as exc:
                    say(f"reading {run.run_id}: {exc!r}")
                    continue
                if state in TERMINAL:
                    states[run.dag_id, run.run_id] = state
                    say(f"run {run.dag_id}/{run.run_id}: {state} after {time.monotonic() - t0:.0f}s")
        if time.monotonic() > deadline:
            pending = [r.run_id for r in runs if (r.dag_id, r.run_id) not in states]
            raise E2EFailure(f"runs still not finished after {timeout:.0f}s: {pending}")
        time.sleep(1.0)
    failed = [f"{r.dag_id}/{r.run_id}" for r in runs if states[r.dag_id, r.run_id] != "success"]
    if failed:
        details = {
            r.run_id: {ti["task_id"]: ti["state"] for ti in dep.task_instances(r.dag_id, r.run_id)} for r in runs
        }
        raise E2EFailure(f"runs did not succeed: {failed}; task states {details}")
    for run in runs:
        run.outcome = run.check(ctx, run.run_id)
    return [r.outcome for r in runs]


def expect_batches(ctx: Context, before: int, runs: list[Run]) -> int:
    created = ctx.batches_created() - before
    expected = sum(r.batches(r.outcome) for r in runs)
    if created != expected:
        raise E2EFailure(f"the emulator created {created} batches for {expected} creates")
    return created


def expect_no_leak(ctx: Context) -> None:
    leaked = cluster_dep(ctx).leaked()
    if leaked:
        raise E2EFailure(f"processes outlived their service: {leaked}")


def summary(runs: list[Run], created: int, **extra: Any) -> dict[str, Any]:
    return {
        "runs": [r.run_id for r in runs],
        "batches_created": created,
        "bytes_compared": sum(int(r.outcome.get("bytes_compared", 0)) for r in runs),
        **extra,
    }


def wait_deferred(ctx: Context, runs: list[Run], task_id: str = "wait_for_batch", timeout: float = 240) -> None:
    """Wait until ``task_id`` of every run is deferred and its trigger is assigned to a triggerer."""

    def all_deferred() -> bool:
        return all(ctx.dep.task_state(r.dag_id, r.run_id, task_id)["state"] == "deferred" for r in runs)

    ctx.dep.wait_for(f"{task_id} of {len(runs)} run(s) to be deferred", all_deferred, timeout, interval=1.0)
    ctx.dep.wait_for(
        "their triggers to be assigned", lambda: sum(trigger_holders(ctx, runs, task_id).values()) == len(runs), 60
    )


def trigger_holders(ctx: Context, runs: list[Run], task_id: str = "wait_for_batch") -> Counter[str]:
    """Which triggerer (by host name) runs the trigger of each run's deferred task."""
    rows = cluster_dep(ctx).sql(
        "SELECT j.hostname FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id "
        "JOIN job j ON j.id = t.triggerer_id WHERE ti.task_id = %s AND ti.run_id = ANY(%s)",
        task_id,
        [r.run_id for r in runs],
    )
    return Counter(str(row[0]) for row in rows)


# -- deployment scenarios ----------------------------------------------------------------------
def run_concurrent(ctx: Context) -> dict[str, Any]:
    """Several runs at once: the example DAGs (nightly, large job) and three cluster runs, all through S3."""
    dep = cluster_dep(ctx)
    before = ctx.batches_created()
    runs = [cluster_run(ctx, f"concurrent-{n}", size) for n, size in enumerate((150, 250, 350))]
    for dag_id in (NIGHTLY_DAG, JOB_DAG):
        ctx.dep.wait_dag(dag_id)
    now = pendulum.now("UTC").to_iso8601_string()
    nightly = ctx.trigger(NIGHTLY_DAG, {"output": dep.s3_uri("nightly", "rest")}, logical_date=now)
    job = ctx.trigger(JOB_DAG, {"output": dep.s3_uri("large-job", "rest")}, logical_date=now)

    def check_job(c: Context, rid: str) -> dict[str, Any]:
        outcome = check_job_output(c, c.dep.xcom(JOB_DAG, rid, "nightly_job"), JOB_REQUESTS)
        outcome.pop("sends")  # the example's ids repeat in its scheduled run: the emulator's counts are not its own
        return outcome

    runs.append(Run(NIGHTLY_DAG, nightly, check_nightly_run))
    runs.append(Run(JOB_DAG, job, check_job, batches=lambda o: int(o["batches"])))
    # Unpausing a @daily example starts its latest interval's run too (catchup=False): those runs
    # are part of the load and of the batch count. The nightly one always exists; the job's only
    # while the example is scheduled.
    ctx.dep.wait_for(
        "the scheduler's own nightly_batch run",
        lambda: any(r["run_type"] == "scheduled" for r in dep.dag_runs(NIGHTLY_DAG)),
        90,
    )
    checks: dict[str, tuple[Check, Callable[[dict[str, Any]], int]]] = {
        NIGHTLY_DAG: (check_nightly_run, lambda _o: 1),
        JOB_DAG: (check_job, lambda o: int(o["batches"])),
    }

    def scheduled_runs() -> list[Run]:
        new = []
        for dag_id, (check, batches) in checks.items():
            for item in dep.dag_runs(dag_id):
                known = any(r.dag_id == dag_id and r.run_id == item["dag_run_id"] for r in runs)
                if item["run_type"] == "scheduled" and not known:
                    ctx.runs.append((dag_id, item["dag_run_id"]))
                    new.append(Run(dag_id, item["dag_run_id"], check, batches=batches))
        return new

    runs += scheduled_runs()
    say(f"{len(runs)} runs in flight or queued: {[f'{r.dag_id}/{r.run_id}' for r in runs]}")
    finish(ctx, runs, timeout=600)
    late = scheduled_runs()
    if late:
        runs += late
        finish(ctx, late, timeout=300)
    # Pause the @daily examples (a paused DAG's runs do not progress, so only now): a new interval
    # starting later (midnight UTC) must not create batches in the middle of another scenario's count.
    for dag_id in checks:
        dep.api_json("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
    created = expect_batches(ctx, before, runs)
    hosts = workers_used(ctx, runs)
    if len(hosts) < 2:
        raise E2EFailure(f"all tasks ran on one worker: {hosts}")
    job_runs = [r.outcome for r in runs if r.dag_id == JOB_DAG]
    expect_no_leak(ctx)
    return summary(runs, created, worker_task_counts=dict(hosts), job_rounds=[o["last_round"] for o in job_runs])


def workers_used(ctx: Context, runs: list[Run]) -> Counter[str]:
    rows = cluster_dep(ctx).sql(
        "SELECT hostname FROM task_instance WHERE run_id = ANY(%s) "
        "UNION ALL SELECT hostname FROM task_instance_history WHERE run_id = ANY(%s)",
        [r.run_id for r in runs],
        [r.run_id for r in runs],
    )
    return Counter(str(row[0]) for row in rows if row[0])


# -- chaos -------------------------------------------------------------------------------------
def run_triggerer_kill(ctx: Context) -> dict[str, Any]:
    """SIGKILL the triggerer holding the deferred waits; the other triggerer takes them over."""
    dep = cluster_dep(ctx)
    before = ctx.batches_created()
    runs = [cluster_run(ctx, f"triggerer-kill-{n}", 120 + n) for n in range(3)]
    wait_deferred(ctx, runs)
    holders = trigger_holders(ctx, runs)
    victim = holders.most_common(1)[0][0]
    survivor = next(n for n in TRIGGERERS if n != victim)
    say(f"triggers held by {dict(holders)}; killing {victim}")
    dep.kill_service(victim)
    t = time.monotonic()
    dep.wait_for(
        f"{survivor} to hold every trigger",
        lambda: trigger_holders(ctx, runs) == Counter({survivor: len(runs)}),
        90,
        interval=1.0,
    )
    takeover = round(time.monotonic() - t, 1)
    say(f"{survivor} holds all {len(runs)} triggers {takeover}s after the kill")
    finish(ctx, runs)
    created = expect_batches(ctx, before, runs)
    tries = [int(ctx.dep.task_state(CHAOS_DAG, r.run_id, "wait_for_batch")["try_number"]) for r in runs]
    if tries != [1] * len(runs):
        raise E2EFailure(f"a wait needed a retry instead of a takeover: tries {tries}")
    expect_no_leak(ctx)
    dep.restart_service(victim)  # as a supervisor would; later scenarios need both
    return summary(runs, created, killed=victim, held_before=dict(holders), takeover_seconds=takeover)


def run_worker_kill(ctx: Context) -> dict[str, Any]:
    """SIGKILL the Celery worker running create right after the batch id was recorded; the retry reuses it."""
    dep = cluster_dep(ctx)
    before = ctx.batches_created()
    run = cluster_run(ctx, "worker-kill", 222, crash="hold_after_record")
    ctx.dep.wait_for(
        "the create to record its batch",
        lambda: (
            ctx.batches_created() > before
            and CHAOS_HOLD_MARKER in ctx.dep.task_log(CHAOS_DAG, run.run_id, "create_batch", 1)
        ),
        180,
        interval=0.5,
    )
    host = str(ctx.dep.task_state(CHAOS_DAG, run.run_id, "create_batch")["hostname"])
    if host not in WORKERS:
        raise E2EFailure(f"create ran on {host!r}, not a worker")
    other = next(n for n in WORKERS if n != host)
    dep.kill_service(host)
    t = time.monotonic()
    finish(ctx, [run], timeout=300)
    recovery = round(time.monotonic() - t, 1)
    created = expect_batches(ctx, before, [run])
    ti = ctx.dep.task_state(CHAOS_DAG, run.run_id, "create_batch")
    if int(ti["try_number"]) != 2 or ti["hostname"] != other:
        raise E2EFailure(f"expected try 2 of create on {other}: try {ti['try_number']} on {ti['hostname']}")
    log = ctx.dep.task_log(CHAOS_DAG, run.run_id, "create_batch", 2)
    if "Reusing batch" not in log:
        raise E2EFailure(f"the retry does not say it reused the batch:\n{log[-2000:]}")
    expect_no_leak(ctx)
    dep.restart_service(host)
    dep.wait_workers(host)
    return summary([run], created, killed=host, retry_on=other, recovery_seconds=recovery)


def _restart_during_waits(ctx: Context, name: str, down: float, *, end_while_down: bool) -> dict[str, Any]:
    dep = cluster_dep(ctx)
    before = ctx.batches_created()
    runs = [cluster_run(ctx, f"{name}-restart-{n}", 130 + n) for n in range(2)]
    wait_deferred(ctx, runs)
    dep.supervised_restarts.clear()
    dep.supervise = True
    try:
        # Ending the batches while the service is down makes the triggers fire into the outage:
        # the next tasks must be queued while it is gone.
        dep.restart_infra(name, down, while_down=dep.end_batches if end_while_down else None)
        finish(ctx, runs)
        # Give a process that is about to die of the outage the time to do so, and be restarted.
        dep.wait_healthy(timeout=120)
    finally:
        dep.supervise = False
    created = expect_batches(ctx, before, runs)
    restarts = list(dep.supervised_restarts)
    tries = {t: [int(ctx.dep.task_state(r.dag_id, r.run_id, t)["try_number"]) for r in runs] for t in TASKS}
    expect_no_leak(ctx)
    return summary(
        runs,
        created,
        down_seconds=down,
        batches_ended_during_outage=end_while_down,
        supervisor_restarts=restarts,
        tries=tries,
    )


def run_postgres_restart(ctx: Context) -> dict[str, Any]:
    """PostgreSQL stops (fast shutdown) for 10 s and comes back while the waits are deferred."""
    return _restart_during_waits(ctx, "postgres", 10, end_while_down=False)


def run_redis_restart(ctx: Context) -> dict[str, Any]:
    """Redis stops for 15 s, the batches end meanwhile, and it comes back empty (``--save ''``)."""
    return _restart_during_waits(ctx, "redis", 15, end_while_down=True)


SCHEDULER_PAUSE = 60.0


def run_scheduler_pause(ctx: Context) -> dict[str, Any]:
    """The scheduler is stopped for a minute mid-run (batches end meanwhile), then started again."""
    dep = cluster_dep(ctx)
    before = ctx.batches_created()
    runs = [cluster_run(ctx, f"scheduler-pause-{n}", 140 + n) for n in range(2)]
    wait_deferred(ctx, runs)
    dep.services["scheduler"].stop()
    say(f"scheduler stopped for {SCHEDULER_PAUSE:.0f}s")
    dep.end_batches()
    deadline = time.monotonic() + SCHEDULER_PAUSE
    while time.monotonic() < deadline:
        dep.check_processes()
        time.sleep(1)
    states = {r.run_id: dep.run_state(r.dag_id, r.run_id) for r in runs}
    if any(s in TERMINAL for s in states.values()):
        raise E2EFailure(f"runs finished while no scheduler ran: {states}")
    dep.restart_service("scheduler")
    finish(ctx, runs)
    created = expect_batches(ctx, before, runs)
    expect_no_leak(ctx)
    return summary(runs, created, scheduler_down_seconds=SCHEDULER_PAUSE)


# -- load --------------------------------------------------------------------------------------
LOAD_WAITS = 100
LOAD_FAULT_RATE = 0.05
FAULT_KINDS: list[dict[str, Any]] = [
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 529},
    {"kind": "status", "status": 429, "retry_after": 1},
    {"kind": "reset"},
]


class FaultArmer(threading.Thread):
    """Keep about ``rate`` of the emulator's retrieve calls failing, one armed fault at a time."""

    def __init__(self, url: str, rate: float, headers: dict[str, str]) -> None:
        super().__init__(name="fault-armer", daemon=True)
        self.url, self.rate, self.headers = url, rate, headers
        self.stop_event = threading.Event()
        self.start_calls = self.start_fired = 0

    def run(self) -> None:
        turn = 0
        with requests.Session() as session:
            session.headers.update(self.headers)  # the admin endpoints take the API key
            while not self.stop_event.wait(0.05):
                try:
                    stats = session.get(f"{self.url}/_emulator/stats", timeout=5).json()
                    calls = int(stats["calls"].get("retrieve", 0)) - self.start_calls
                    fired = int(stats["faults_fired"]) - self.start_fired
                    if not stats["faults"] and fired < self.rate * calls:
                        fault = {**FAULT_KINDS[turn % len(FAULT_KINDS)], "endpoint": "retrieve", "count": 1}
                        session.post(f"{self.url}/_emulator/faults", json=fault, timeout=5)
                        turn += 1
                except requests.RequestException:
                    continue
            session.delete(f"{self.url}/_emulator/faults", timeout=5)


def run_load(ctx: Context) -> dict[str, Any]:
    """100 deferred waits at once across both triggerers, 5% of the API's retrieve calls failing."""
    dep = cluster_dep(ctx)
    before = ctx.batches_created()
    stats0 = dep.emu_stats()
    armer = FaultArmer(dep.emulator_url, LOAD_FAULT_RATE, dep.emu_headers)
    armer.start_calls, armer.start_fired = int(stats0["calls"].get("retrieve", 0)), int(stats0["faults_fired"])
    run_id = ctx.trigger(LOAD_DAG, {"batches": LOAD_WAITS})
    ids: list[str] = ctx.dep.wait_for(
        "the load's batches to be created",
        lambda: (
            ctx.dep.xcom(LOAD_DAG, run_id, "create_batches")
            if ctx.dep.task_state(LOAD_DAG, run_id, "create_batches")["state"] == "success"
            else None
        ),
        180,
        interval=1.0,
    )
    armer.start()
    t = time.monotonic()
    peak: dict[str, int] = dict.fromkeys(TRIGGERERS, 0)
    held: Counter[str] = Counter()

    def all_deferred() -> bool:
        for name in TRIGGERERS:
            peak[name] = max(peak[name], dep.service_rss(name))
        rows = dep.sql(
            "SELECT j.hostname, count(*) FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id "
            "JOIN job j ON j.id = t.triggerer_id WHERE ti.run_id = %s AND ti.task_id = 'wait' GROUP BY j.hostname",
            run_id,
        )
        held.clear()
        held.update({str(h): int(c) for h, c in rows})
        return sum(held.values()) == LOAD_WAITS

    try:
        ctx.dep.wait_for(f"all {LOAD_WAITS} waits deferred in the triggerers", all_deferred, 400, interval=2.0)
        deferred_after = round(time.monotonic() - t, 1)
        say(f"all {LOAD_WAITS} waits deferred after {deferred_after}s: {dict(held)}; polling under faults for 30 s")
        calls0 = int(dep.emu_stats()["calls"]["retrieve"])
        t_poll = time.monotonic()
        for _ in range(15):
            time.sleep(2)
            for name in TRIGGERERS:
                peak[name] = max(peak[name], dep.service_rss(name))
        retrieve_rate = (int(dep.emu_stats()["calls"]["retrieve"]) - calls0) / (time.monotonic() - t_poll)
        run = Run(LOAD_DAG, run_id, lambda _c, _r: {}, batches=lambda _o: LOAD_WAITS + 0)
        finish(ctx, [run], timeout=400, tick=5.0)
    finally:
        armer.stop_event.set()
        armer.join(10)
    stats1 = dep.emu_stats()
    calls = int(stats1["calls"]["retrieve"]) - armer.start_calls
    fired = int(stats1["faults_fired"]) - armer.start_fired
    if len(held) < 2 or min(held.values()) == 0:
        raise E2EFailure(f"one triggerer ran every wait: {dict(held)}")
    if fired < 1:
        raise E2EFailure("no fault fired during the load")
    collected = ctx.dep.xcom(LOAD_DAG, run_id, "collect")
    if sorted(collected["batch_ids"]) != sorted(ids) or collected["waits"] != LOAD_WAITS:
        raise E2EFailure(f"the waits did not each end with their own batch: {collected}")
    created = ctx.batches_created() - before
    if created != LOAD_WAITS:
        raise E2EFailure(f"the emulator created {created} batches for {LOAD_WAITS} creates")
    tries = Counter(
        {
            int(n): int(c)
            for n, c in dep.sql(
                "SELECT try_number, count(*) FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = 'wait' "
                "GROUP BY try_number",
                LOAD_DAG,
                run_id,
            )
        }
    )
    if tries != Counter({1: LOAD_WAITS}):
        raise E2EFailure(f"every wait should end on its first try (faults are the trigger's to absorb): {dict(tries)}")
    expect_no_leak(ctx)
    return {
        "run_id": run_id,
        "batches_created": created,
        "waits": LOAD_WAITS,
        "held_per_triggerer": dict(held),
        "seconds_to_defer_all": deferred_after,
        "retrieve_calls_per_second": round(retrieve_rate, 1),
        "retrieve_calls": calls,
        "faults_fired": fired,
        "fault_rate": round(fired / max(1, calls), 4),
        "peak_rss_mb": {n: round(v / 2**20) for n, v in peak.items()},
        "wait_tries": dict(tries),
    }


# -- the list --------------------------------------------------------------------------------
def dag_files(repo: Path) -> list[Path]:
    """Every scenario runs with all the cluster's DAGs (the examples' own scheduled runs are part of the load)."""
    here = Path(__file__).resolve().parent / "dags"
    return [*example_dags(repo), *chaos_dag(repo), here / "anthropix_cluster_load.py"]


def _scenario(name: str, doc: str, run: Callable[[Context], dict[str, Any]], chaos: bool = False) -> Scenario:
    return Scenario(name, doc, run, dag_files, chaos=chaos)


SCENARIOS: list[Scenario] = [
    _scenario("concurrent", "example DAGs + cluster runs at once, results in S3", run_concurrent),
    _scenario("triggerer-kill", "SIGKILL the triggerer holding the waits (HA takeover)", run_triggerer_kill, True),
    _scenario("worker-kill", "SIGKILL the Celery worker right after create recorded", run_worker_kill, True),
    _scenario("postgres-restart", "PostgreSQL down 10 s during the waits", run_postgres_restart, True),
    _scenario("redis-restart", "Redis down 15 s during the waits; batches end meanwhile", run_redis_restart, True),
    _scenario("scheduler-pause", "scheduler stopped for a minute mid-run", run_scheduler_pause, True),
    _scenario("load", "100 deferred waits over two triggerers, 5% API faults", run_load),
]

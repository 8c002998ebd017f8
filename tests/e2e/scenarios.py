"""The scenarios ``tests/e2e/run.py`` runs against the deployment, and the checks they share.

The checks read what the tasks wrote through :meth:`Deployment.read_bytes`, so the cluster run
(``tests/e2e_cluster/cluster_scenarios.py``, results in S3) uses them as they are.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pendulum
import requests
from deployment import Deployment, E2EFailure, local_path, say

PROBE_DAG = "anthropix_e2e_probe"


@dataclass
class Context:
    """What a scenario gets: the running deployment and the run-wide bookkeeping."""

    dep: Deployment
    repo: Path
    api_key: str
    runs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def key_fragment(self) -> str:
        """The random tail of the key: a leak of part of the key is still a leak."""
        return self.api_key.rsplit("-", 1)[1]

    def batches_created(self) -> int:
        return int(self.dep.emu_stats()["batches_created"])

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, **kwargs: Any) -> str:
        """Wait for the DAG to be parsed (and unpause it), trigger a run, note it for the scans; its run id."""
        self.dep.wait_dag(dag_id)
        run_id = self.dep.trigger(dag_id, conf, **kwargs)
        self.runs.append((dag_id, run_id))
        return run_id

    def run_dag(self, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 240) -> tuple[str, str]:
        """Trigger, wait, and return ``(run_id, state)``."""
        run_id = self.trigger(dag_id, conf)
        return run_id, self.dep.wait_run(dag_id, run_id, timeout)

    def expect_success(self, dag_id: str, run_id: str, state: str) -> None:
        if state != "success":
            raise E2EFailure(f"run {dag_id}/{run_id} ended {state!r}, expected 'success'")

    # -- shared checks -------------------------------------------------------------------------
    def scan_for_key(self) -> dict[str, int]:
        """Count occurrences of the key (and of its random tail) in every file of the run.

        That covers the SQLite database (XCom, trigger kwargs, rendered fields, task state
        store, serialized DAGs, log table, deleted rows still in free pages), the WAL, every
        task/triggerer/scheduler/dag-processor/api-server log, and the results written.
        """
        needles = [self.api_key.encode(), self.key_fragment.encode()]
        hits: dict[str, int] = {}
        scanned = 0
        for path in sorted(self.dep.run_dir.rglob("*")):
            if not path.is_file() or path.name == "pids":
                continue
            data = path.read_bytes()
            scanned += len(data)
            if path.suffix == ".gz":
                with contextlib.suppress(OSError):
                    data += gzip.decompress(data)
            count = max(data.count(n) for n in needles)
            if count:
                hits[str(path.relative_to(self.dep.run_dir))] = count
        say(f"secret scan: {scanned:,} bytes in {self.dep.run_dir}, {sum(hits.values())} occurrence(s)")
        if hits:
            raise E2EFailure(f"the API key leaked into: {hits}")
        return {"bytes_scanned": scanned, "occurrences": 0}

    def scan_rest(self) -> int:
        """Look for the key in what the REST API shows: XComs, rendered fields, task logs, run conf."""
        dep, hits, seen = self.dep, [], 0
        for dag_id, run_id in self.runs:
            run = dep.api_json("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            texts = [json.dumps(run)]
            for ti in dep.task_instances(dag_id, run_id):
                texts.append(json.dumps(ti))  # includes rendered_fields
                for try_number in range(1, int(ti.get("try_number") or 0) + 1):
                    try:
                        texts.append(dep.task_log(dag_id, run_id, ti["task_id"], try_number))
                    except Exception:  # a try that never started has no log
                        continue
                entries = dep.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/xcomEntries")
                if entries.status_code == 200:
                    texts.append(entries.text)
                    for entry in entries.json().get("xcom_entries", []):
                        try:
                            texts.append(json.dumps(dep.xcom(dag_id, run_id, ti["task_id"], entry["key"])))
                        except E2EFailure:
                            continue
            for text in texts:
                seen += len(text)
                if self.api_key in text or self.key_fragment in text:
                    hits.append(f"{dag_id}/{run_id}")
        if hits:
            raise E2EFailure(f"the API key is visible through the REST API in runs {sorted(set(hits))}")
        return seen

    def final_checks(self, results: list[dict[str, Any]]) -> None:
        rest_bytes = self.scan_rest()
        files = self.scan_for_key()
        results.append(
            {
                "name": "secret-scan",
                "ok": True,
                "files_bytes_scanned": files["bytes_scanned"],
                "rest_chars_scanned": rest_bytes,
                "occurrences": 0,
            }
        )
        results.append({"name": "metrics", "ok": True, **self.check_metrics()})

    def check_metrics(self) -> dict[str, Any]:
        """The Airflow processes sent the provider's documented metrics to the StatsD server, and no others."""
        from airflow_provider_anthropix.metrics import METRICS

        received = {name.split(",", 1)[0].removeprefix("airflow.") for name in self.dep.statsd.names()}
        ours = {name for name in received if name.startswith("anthropix.")}
        undocumented = sorted(ours - set(METRICS))
        if undocumented:
            raise E2EFailure(f"metrics sent that docs/metrics.md does not list: {undocumented}")
        if self.batches_created():
            expected = {
                "anthropix.batches.created",
                "anthropix.requests.submitted",
                "anthropix.requests.succeeded",
                "anthropix.export.bytes",
                "anthropix.export.duration",
            }
            missing = sorted(expected - ours)
            if missing:
                raise E2EFailure(f"StatsD never received {missing} (received: {sorted(ours)})")
        return {"anthropix_metrics_received": sorted(ours), "statsd_lines": len(self.dep.statsd.lines)}


def decompressed(name: str, data: bytes) -> bytes:
    """``data`` as written, ungzipped when ``name`` ends in ``.gz``."""
    return gzip.decompress(data) if name.endswith(".gz") else data


def beside(manifest_uri: str, ref: str) -> str:
    """A file a manifest lists: ``ref`` as it is, or, when relative, next to the manifest."""
    if "://" in ref or ref.startswith("/"):
        return ref
    return f"{manifest_uri.rsplit('/', 1)[0]}/{ref}"


def check_manifest(dep: Deployment, manifest_uri: str) -> dict[str, Any]:
    """Check that the manifest describes files that exist, are complete and add up.

    Works with the probe DAG's manifest and the FetchBatchResultsOperator's: files are
    listed as strings or as objects with ``path``/``uri`` and optional ``bytes``/``sha256``/``lines``.
    """
    manifest = json.loads(dep.read_bytes(manifest_uri))
    files = manifest.get("files") or []
    if not files:
        raise E2EFailure(f"manifest {manifest_uri} lists no files: {manifest}")
    total_lines = total_bytes = 0
    digests = []
    for item in files:
        entry = item if isinstance(item, dict) else {"path": item}
        ref = entry.get("path") or entry.get("uri") or entry.get("url")
        if not ref:
            raise E2EFailure(f"manifest entry without a path: {entry}")
        data = dep.read_bytes(beside(manifest_uri, str(ref)))
        size = entry.get("bytes", entry.get("size"))
        if size is not None and int(size) != len(data):
            raise E2EFailure(f"{ref}: manifest says {size} bytes, file has {len(data)}")
        digest = hashlib.sha256(data).hexdigest()
        if entry.get("sha256") and entry["sha256"] != digest:
            raise E2EFailure(f"{ref}: sha256 differs from the manifest")
        digests.append(digest)
        total_bytes += len(data)
        if str(ref).endswith((".jsonl", ".jsonl.gz")):
            lines = decompressed(str(ref), data).count(b"\n")
            if entry.get("lines") is not None and int(entry["lines"]) != lines:
                raise E2EFailure(f"{ref}: manifest says {entry['lines']} lines, file has {lines}")
            total_lines += lines
    counts = manifest.get("counts") or {}
    expected = counts.get("total")
    if expected is None and counts:
        expected = sum(int(v) for k, v in counts.items() if k in ("succeeded", "errored", "canceled", "expired"))
    if expected is not None and total_lines and int(expected) != total_lines:
        raise E2EFailure(f"manifest counts {counts} do not add up to the {total_lines} lines written")
    return {
        "manifest": manifest_uri,
        "files": len(files),
        "bytes": total_bytes,
        "lines": total_lines,
        "sha256": digests,
    }


# -- scenarios ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    name: str
    doc: str
    run: Callable[[Context], dict[str, Any]]
    dag_files: Callable[[Path], list[Path]]
    chaos: bool = False
    #: run without --only (the probe is a diagnostic of the harness itself)
    default: bool = True


def probe_dag(_repo: Path) -> list[Path]:
    return [Path(__file__).resolve().parent / "dags" / "anthropix_e2e_probe.py"]


def run_probe(ctx: Context) -> dict[str, Any]:
    """The harness itself: a hook-only DAG creates, waits, fetches and writes a manifest."""
    before = ctx.batches_created()
    run_id, state = ctx.run_dag(PROBE_DAG, {"requests": 20})
    ctx.expect_success(PROBE_DAG, run_id, state)
    value = ctx.dep.xcom(PROBE_DAG, run_id, "fetch")
    checked = check_manifest(ctx.dep, value["manifest"])
    created = ctx.batches_created() - before
    if created != 1:
        raise E2EFailure(f"expected exactly 1 batch, the emulator saw {created}")
    if checked["lines"] != 20:
        raise E2EFailure(f"expected 20 result lines, got {checked['lines']}")
    return {"run_id": run_id, "batches_created": created, "lines": checked["lines"], "bytes": checked["bytes"]}


NIGHTLY_DAG = "nightly_batch"
NIGHTLY_REQUESTS = 300


def example_dags(repo: Path) -> list[Path]:
    return [repo / "example_dags"]


def results_bytes(ctx: Context, batch_id: str) -> bytes:
    """The batch's results straight from the emulator, fault-free: the reference for byte comparisons."""
    response = requests.get(
        f"{ctx.dep.emulator_url}/v1/messages/batches/{batch_id}/results",
        headers={"x-api-key": ctx.api_key, "anthropic-version": "2026-10-21"},
        timeout=60,
    )
    response.raise_for_status()
    return response.content


def written_bytes(dep: Deployment, manifest_uri: str) -> bytes:
    """The results the fetch wrote, decompressed, in file order."""
    manifest = json.loads(dep.read_bytes(manifest_uri))
    out = b""
    for entry in manifest["files"]:
        ref = str(entry.get("uri") or entry.get("path"))
        out += decompressed(ref, dep.read_bytes(ref))
    return out


def check_fetch(ctx: Context, fetched: dict[str, Any], requests_expected: int, what: str = "") -> dict[str, Any]:
    """A fetch's results: complete, one line a request, byte-identical to the API's fault-free stream."""
    prefix = f"{what}: " if what else ""
    checked = check_manifest(ctx.dep, fetched["manifest"])
    if not fetched.get("complete"):
        raise E2EFailure(f"{prefix}the fetch says the results are incomplete: {fetched}")
    if checked["lines"] != requests_expected:
        raise E2EFailure(f"{prefix}expected {requests_expected} result lines, the files hold {checked['lines']}")
    reference = results_bytes(ctx, fetched["batch_id"])
    written = written_bytes(ctx.dep, fetched["manifest"])
    if written != reference:
        raise E2EFailure(
            f"{prefix}results written ({len(written)} bytes) differ from the API's stream ({len(reference)} bytes)"
        )
    return {
        "batch_id": fetched["batch_id"],
        "lines": checked["lines"],
        "bytes_compared": len(reference),
        "files": checked["files"],
    }


def check_nightly_run(ctx: Context, run_id: str, *, requests_expected: int = NIGHTLY_REQUESTS) -> dict[str, Any]:
    """What a user checks after the example DAG ran: manifest, completeness, bytes, report."""
    outcome = check_fetch(ctx, ctx.dep.xcom(NIGHTLY_DAG, run_id, "fetch_results"), requests_expected)
    report = ctx.dep.xcom(NIGHTLY_DAG, run_id, "report")
    if report.get("batch_id") != outcome["batch_id"]:
        raise E2EFailure(f"report names batch {report.get('batch_id')}, fetch {outcome['batch_id']}")
    return outcome


def nightly_conf(ctx: Context, name: str) -> dict[str, Any]:
    return {"output": (ctx.dep.out_dir / name).as_uri()}


def run_nightly(ctx: Context) -> dict[str, Any]:
    """The shipped example DAG: its own @daily run, plus a run triggered through the REST API.

    Unpausing a ``@daily`` DAG with ``catchup=False`` makes the scheduler start the latest
    interval's run at once (output from ``ANTHROPIX_NIGHTLY_OUTPUT``); the REST run is
    queued behind it (``max_active_runs=1``) and writes to the folder given in its conf.
    The REST run is given a logical date, as the UI's trigger form does: see the report
    about ``logical_date: null`` in docs/reliability.md.
    """
    before = ctx.batches_created()
    rest_run = ctx.trigger(
        NIGHTLY_DAG, nightly_conf(ctx, "nightly-rest"), logical_date=pendulum.now("UTC").to_iso8601_string()
    )
    scheduled = ctx.dep.wait_for(
        "the scheduler's own nightly_batch run",
        lambda: [r["dag_run_id"] for r in ctx.dep.dag_runs(NIGHTLY_DAG) if r["run_type"] == "scheduled"],
        60,
    )[0]
    ctx.runs.append((NIGHTLY_DAG, scheduled))
    outcomes = []
    for run_id in (scheduled, rest_run):
        state = ctx.dep.wait_run(NIGHTLY_DAG, run_id)
        ctx.expect_success(NIGHTLY_DAG, run_id, state)
        outcome = check_nightly_run(ctx, run_id)
        if not ctx.dep.triggerer_mentions(outcome["batch_id"]):
            raise E2EFailure(f"the triggerer's logs never mention batch {outcome['batch_id']}: no deferral")
        outcomes.append(outcome)
    created = ctx.batches_created() - before
    if created != 2:
        raise E2EFailure(f"expected exactly 2 batches (one per run), the emulator saw {created}")
    if outcomes[0]["batch_id"] == outcomes[1]["batch_id"]:
        raise E2EFailure("the two runs share one batch id")
    return {
        "runs": [scheduled, rest_run],
        "batches_created": created,
        "lines": sum(o["lines"] for o in outcomes),
        "bytes_compared": sum(o["bytes_compared"] for o in outcomes),
    }


def run_nightly_null_date(ctx: Context) -> dict[str, Any]:
    """The example DAG triggered like ``airflow dags trigger`` does: no logical date.

    The example's run folder is named after ``dag_run.run_after`` because ``ds``/``ts`` are
    undefined for such runs (see docs/reliability.md, Findings).
    """
    before = ctx.batches_created()
    run_id = ctx.trigger(NIGHTLY_DAG, nightly_conf(ctx, "nightly-null-date"), logical_date=None)
    # The scheduler's own run may go first (max_active_runs=1); wait for ours only.
    state = ctx.dep.wait_run(NIGHTLY_DAG, run_id, timeout=400)
    ctx.expect_success(NIGHTLY_DAG, run_id, state)
    outcome = check_nightly_run(ctx, run_id)
    return {"run_id": run_id, "batches_created": ctx.batches_created() - before, **outcome}


# -- chaos ---------------------------------------------------------------------------------------
CHAOS_DAG = "anthropix_e2e_chaos"
CHAOS_MARKER = "E2E-CHAOS-SIGKILL"
#: what the chaos DAG logs where ``crash=hold_after_record`` makes it wait to be killed from outside
CHAOS_HOLD_MARKER = "E2E-CHAOS-HOLD"


def chaos_dag(_repo: Path) -> list[Path]:
    return [Path(__file__).resolve().parent / "dags" / "anthropix_e2e_chaos.py"]


@dataclass
class ChaosRun:
    """One run of the chaos DAG and what it is checked against."""

    ctx: Context
    name: str
    requests: int
    crash: str = ""
    run_id: str = ""
    batches_before: int = 0

    def start(self) -> ChaosRun:
        self.ctx.dep.wait_dag(CHAOS_DAG)
        self.batches_before = self.ctx.batches_created()
        conf = {"output": (self.ctx.dep.out_dir / self.name).as_uri(), "requests": self.requests, "crash": self.crash}
        self.run_id = self.ctx.dep.trigger(CHAOS_DAG, conf)
        self.ctx.runs.append((CHAOS_DAG, self.run_id))
        return self

    def ti(self, task_id: str) -> dict[str, Any]:
        return self.ctx.dep.task_state(CHAOS_DAG, self.run_id, task_id)

    def wait_task_state(self, task_id: str, states: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
        result: dict[str, Any] = self.ctx.dep.wait_for(
            f"{task_id} to be {'/'.join(states)}",
            lambda: ti if (ti := self.ti(task_id)).get("state") in states else None,
            timeout,
            interval=0.3,
        )
        return result

    def log(self, task_id: str, try_number: int) -> str:
        return self.ctx.dep.task_log(CHAOS_DAG, self.run_id, task_id, try_number)

    def finish(self) -> dict[str, Any]:
        """Wait for success; check exactly one batch and byte-identical, complete results."""
        state = self.ctx.dep.wait_run(CHAOS_DAG, self.run_id)
        self.ctx.expect_success(CHAOS_DAG, self.run_id, state)
        created = self.ctx.batches_created() - self.batches_before
        if created != 1:
            raise E2EFailure(f"{self.name}: expected exactly 1 batch, the emulator saw {created}")
        fetched = self.ctx.dep.xcom(CHAOS_DAG, self.run_id, "fetch_results")
        checked = check_fetch(self.ctx, fetched, self.requests, self.name)
        folder = local_path(fetched["manifest"]).parent
        leftovers = sorted(p.name for p in folder.iterdir() if p.name.startswith("_tmp_"))
        if leftovers:
            raise E2EFailure(f"{self.name}: staging folders left after success: {leftovers}")
        return {
            "run_id": self.run_id,
            "batch_id": fetched["batch_id"],
            "batches_created": created,
            "lines": checked["lines"],
            "bytes_compared": checked["bytes_compared"],
            "tries": {t: int(self.ti(t)["try_number"]) for t in ("create_batch", "wait_for_batch", "fetch_results")},
        }


def _expect_in_log(run: ChaosRun, task_id: str, try_number: int, text: str) -> None:
    log = run.log(task_id, try_number)
    if text not in log:
        raise E2EFailure(f"{run.name}: try {try_number} of {task_id} does not log {text!r}:\n{log[-3000:]}")


def run_crash_after_create(ctx: Context) -> dict[str, Any]:
    """SIGKILL of the create task right after the API returned the batch, before anything recorded it."""
    run = ChaosRun(ctx, "crash-after-create", requests=201, crash="after_create").start()
    outcome = run.finish()
    _expect_in_log(run, "create_batch", 1, CHAOS_MARKER)
    _expect_in_log(run, "create_batch", 2, "Adopting batch")
    if outcome["tries"]["create_batch"] != 2:
        raise E2EFailure(f"expected the create to succeed on its 2nd try: {outcome['tries']}")
    return outcome


def run_crash_after_record(ctx: Context) -> dict[str, Any]:
    """SIGKILL of the create task right after the batch id reached the task state store."""
    run = ChaosRun(ctx, "crash-after-record", requests=202, crash="after_record").start()
    outcome = run.finish()
    _expect_in_log(run, "create_batch", 1, CHAOS_MARKER)
    _expect_in_log(run, "create_batch", 2, "Reusing batch")
    if outcome["tries"]["create_batch"] != 2:
        raise E2EFailure(f"expected the create to succeed on its 2nd try: {outcome['tries']}")
    return outcome


def _wait_trigger_running(ctx: Context, run: ChaosRun) -> str:
    """Wait until the sensor is deferred and the triggerer polls its batch; return the batch id."""
    run.wait_task_state("wait_for_batch", ("deferred",))
    batch_id = str(ctx.dep.xcom(CHAOS_DAG, run.run_id, "create_batch"))
    ctx.dep.wait_for(f"the triggerer to poll batch {batch_id}", lambda: ctx.dep.triggerer_mentions(batch_id) > 0, 60)
    return batch_id


def run_triggerer_kill(ctx: Context) -> dict[str, Any]:
    """SIGKILL the triggerer while the sensor is deferred; a new triggerer takes the trigger over."""
    run = ChaosRun(ctx, "triggerer-kill", requests=203).start()
    batch_id = _wait_trigger_running(ctx, run)
    ctx.dep.kill_service("triggerer")
    # Let the batch end while no triggerer runs: the success can only come from the new one.
    ctx.dep.wait_for(
        f"batch {batch_id} to end", lambda: results_ready(ctx, batch_id), ctx.dep.processing_seconds + 30, 1.0
    )
    polls_before = int(ctx.dep.emu_stats()["calls"]["retrieve"])
    if run.ti("wait_for_batch")["state"] != "deferred":
        raise E2EFailure("the sensor left the deferred state while no triggerer was running")
    ctx.dep.restart_service("triggerer")
    outcome = run.finish()
    polls_after = int(ctx.dep.emu_stats()["calls"]["retrieve"])
    new_log = ctx.dep.services["triggerer"].log_path.read_text(errors="replace").rsplit("===== start #", 1)[1]
    trigger_logs = ctx.dep.triggerer_mentions(batch_id)
    if polls_after <= polls_before or outcome["tries"]["wait_for_batch"] != 1:
        raise E2EFailure(
            f"the batch was not polled again by the new triggerer (retrieve calls {polls_before} -> {polls_after}, "
            f"tries {outcome['tries']})"
        )
    return {
        **outcome,
        "polls_after_restart": polls_after - polls_before,
        "new_triggerer_log_lines": len(new_log.splitlines()),
        "trigger_log_mentions": trigger_logs,
    }


def results_ready(ctx: Context, batch_id: str) -> bool:
    response = requests.get(
        f"{ctx.dep.emulator_url}/v1/messages/batches/{batch_id}",
        headers={"x-api-key": ctx.api_key, "anthropic-version": "2026-10-21"},
        timeout=10,
    )
    response.raise_for_status()
    return bool(response.json()["processing_status"] == "ended")


def run_api_outage(ctx: Context) -> dict[str, Any]:
    """The API refuses connections for 20 s while the sensor is deferred; the trigger rides it out."""
    run = ChaosRun(ctx, "api-outage", requests=204).start()
    _wait_trigger_running(ctx, run)
    say("proxy: refusing connections for 20 s")
    ctx.dep.proxy_refuse()
    try:
        time.sleep(20)
    finally:
        ctx.dep.proxy_accept()
    say("proxy: accepting connections again")
    outcome = run.finish()
    failures = ctx.dep.triggerer_log_count("Polling batch")
    if failures < 1:
        raise E2EFailure("no failed poll was logged during the outage: the outage did not happen?")
    if outcome["tries"]["wait_for_batch"] != 1:
        raise E2EFailure(f"the sensor needed a retry to survive the outage: {outcome['tries']}")
    return {**outcome, "failed_polls_logged": failures, "outage_seconds": 20}


def run_results_cut(ctx: Context) -> dict[str, Any]:
    """The results stream is cut twice mid-way; the fetch resumes and writes byte-identical results."""
    run = ChaosRun(ctx, "results-cut", requests=2000)
    before = int(ctx.dep.emu_stats()["calls"]["results"])
    ctx.dep.emu_fault(kind="cut", endpoint="results", after_bytes=700_000, count=2)
    run.start()
    outcome = run.finish()
    calls = int(ctx.dep.emu_stats()["calls"]["results"]) - before
    fired = [f for f in ctx.dep.emu_stats()["faults"] if f["kind"] == "cut"]
    if fired:
        raise E2EFailure(f"the cut faults did not all fire: {fired}")
    # +1: the harness's own fault-free reference download
    if calls < 3 + 1:
        raise E2EFailure(f"expected the fetch to reconnect after 2 cuts; results calls: {calls}")
    return {**outcome, "cuts": 2, "results_calls": calls}


def run_fetch_killed(ctx: Context) -> dict[str, Any]:
    """SIGKILL of the fetch mid-way: nothing published; the retry publishes complete results."""
    run = ChaosRun(ctx, "fetch-killed", requests=1500, crash="mid_fetch").start()
    run.wait_task_state("fetch_results", ("up_for_retry",), timeout=180)
    folder = ctx.dep.out_dir / "fetch-killed"
    results = [p for p in folder.rglob("*") if p.is_file() and "/results/" in str(p)]
    published = [p for p in results if not any(part.startswith("_tmp_") for part in p.relative_to(folder).parts)]
    if published:
        raise E2EFailure(f"a killed fetch left final objects: {[str(p) for p in published]}")
    staged = len(results)
    outcome = run.finish()
    _expect_in_log(run, "fetch_results", 1, CHAOS_MARKER)
    return {**outcome, "objects_published_by_killed_try": 0, "staged_objects_left_by_killed_try": staged}


# -- batch jobs -----------------------------------------------------------------------------------
JOB_DAG = "large_job"
JOB_REQUESTS = 2500
JOB_CHAOS_DAG = "anthropix_e2e_job_chaos"


def job_chaos_dag(_repo: Path) -> list[Path]:
    return [Path(__file__).resolve().parent / "dags" / "anthropix_e2e_job_chaos.py"]


def check_job_output(ctx: Context, summary: dict[str, Any], requests_expected: int) -> dict[str, Any]:
    """The merged result is exactly the last attempt of every request, byte for byte as the API served it."""
    checked = check_manifest(ctx.dep, summary["manifest"])
    if checked["lines"] != requests_expected or not summary.get("complete"):
        raise E2EFailure(f"expected {requests_expected} complete merged results, got {summary}")
    manifest = json.loads(ctx.dep.read_bytes(summary["manifest"]))
    batches = manifest["job"]["batch_list"]
    last_round: dict[str, int] = {}
    streams: list[tuple[int, bytes]] = []
    for entry in batches:
        data = results_bytes(ctx, entry["batch_id"])
        streams.append((int(entry["round"]), data))
        for line in data.splitlines():
            custom_id = json.loads(line)["custom_id"]
            last_round[custom_id] = max(last_round.get(custom_id, 0), int(entry["round"]))
    expected = b"".join(
        line + b"\n"
        for round_index, data in streams
        for line in data.splitlines()
        if last_round[json.loads(line)["custom_id"]] == round_index
    )
    written = written_bytes(ctx.dep, summary["manifest"])
    if written != expected:
        raise E2EFailure(
            f"merged results ({len(written)} bytes) differ from the batches' last attempts ({len(expected)})"
        )
    sends: dict[str, int] = {}
    for _, data in streams:
        for line in data.splitlines():
            custom_id = json.loads(line)["custom_id"]
            sends[custom_id] = sends.get(custom_id, 0) + 1
    return {
        "lines": checked["lines"],
        "bytes_compared": len(expected),
        "batches": len(batches),
        "last_round": max((int(b["round"]) for b in batches), default=0),
        "sends": sends,
    }


def check_sent_once_per_round(ctx: Context, sends: dict[str, int], *, sample: int | None = None) -> dict[str, Any]:
    """Every request reached the API in exactly as many batches as the job's manifest lists it in: no duplicate batch.

    The emulator counts the batches that carried each custom_id. A crash between a create and its
    journal entry must be healed by adopting the batch, not by creating it again; a second create
    shows up here as one attempt more than the manifest's batches hold. ``sample``: check every
    request sent more than once and this many others (a stable choice), to keep the run short.
    """
    ids = sorted(sends)
    if sample is not None and len(ids) > sample:
        step = len(ids) // sample
        ids = sorted({*ids[::step], *(i for i, n in sends.items() if n > 1)})
    wrong = {}
    for custom_id in ids:
        attempts = ctx.dep.emu_attempts(custom_id)
        if attempts != sends[custom_id]:
            wrong[custom_id] = {"sent_to_api": attempts, "in_manifest_batches": sends[custom_id]}
            if len(wrong) >= 5:
                break
    if wrong:
        raise E2EFailure(f"requests reached the API in more (or fewer) batches than the job lists: {wrong}")
    return {"requests_send_count_checked": len(ids), "resent": sum(1 for n in sends.values() if n > 1)}


def run_large_job(ctx: Context) -> dict[str, Any]:
    """The shipped batch-job example: 3 batches, transient errors and expiries sent again in a retry round."""
    before = ctx.batches_created()
    run_id, state = ctx.run_dag(JOB_DAG, {"output": (ctx.dep.out_dir / "large-job").as_uri()}, timeout=400)
    ctx.expect_success(JOB_DAG, run_id, state)
    summary = ctx.dep.xcom(JOB_DAG, run_id, "nightly_job")
    outcome = check_job_output(ctx, summary, JOB_REQUESTS)
    outcome.update(check_sent_once_per_round(ctx, outcome.pop("sends"), sample=200))
    created = ctx.batches_created() - before  # includes other DAGs' scheduled runs; the per-request check is exact
    if created < outcome["batches"]:
        raise E2EFailure(f"the job lists {outcome['batches']} batches, the emulator created {created}")
    if summary["job"]["rounds"] < 2:
        raise E2EFailure(f"expected a retry round for the transient errors and expiries: {summary['job']}")
    if not ctx.dep.triggerer_mentions("batches ended"):
        raise E2EFailure("the triggerer's logs never show the job's wait: no deferral")
    return {"run_id": run_id, "batches_created": created, "rounds": summary["job"]["rounds"], **outcome}


def _job_chaos(ctx: Context, name: str, crash: str, requests: int, expect_in_retry: str) -> dict[str, Any]:
    ctx.dep.wait_dag(JOB_CHAOS_DAG)
    before = ctx.batches_created()
    conf = {"output": (ctx.dep.out_dir / name).as_uri(), "requests": requests, "crash": crash}
    run_id = ctx.dep.trigger(JOB_CHAOS_DAG, conf)
    ctx.runs.append((JOB_CHAOS_DAG, run_id))
    state = ctx.dep.wait_run(JOB_CHAOS_DAG, run_id, timeout=400)
    ctx.expect_success(JOB_CHAOS_DAG, run_id, state)
    summary = ctx.dep.xcom(JOB_CHAOS_DAG, run_id, "job")
    outcome = check_job_output(ctx, summary, requests)
    outcome.update(check_sent_once_per_round(ctx, outcome.pop("sends")))
    created = ctx.batches_created() - before
    if created < outcome["batches"]:
        raise E2EFailure(f"{name}: the job lists {outcome['batches']} batches, the emulator created {created}")
    first = ctx.dep.task_log(JOB_CHAOS_DAG, run_id, "job", 1)
    second = ctx.dep.task_log(JOB_CHAOS_DAG, run_id, "job", 2)
    if CHAOS_MARKER not in first or expect_in_retry not in second:
        raise E2EFailure(f"{name}: expected {CHAOS_MARKER!r} in try 1 and {expect_in_retry!r} in try 2")
    return {"run_id": run_id, "batches_created": created, **outcome}


def run_job_crash_after_create(ctx: Context) -> dict[str, Any]:
    """SIGKILL of the job after its second create returned, before the journal recorded it."""
    return _job_chaos(ctx, "job-crash-after-create", "after_second_create", 250, "Adopting batch")


def run_job_crash_mid_export(ctx: Context) -> dict[str, Any]:
    """SIGKILL of the job during its merged export: the retry exports again from the same batches."""
    return _job_chaos(ctx, "job-crash-mid-export", "mid_export", 250, "Exporting results")


SCENARIOS: list[Scenario] = [
    Scenario("probe", "hook-only DAG through the deployment (harness check)", run_probe, probe_dag, default=False),
    Scenario("nightly", "example DAG nightly_batch: create, deferred wait, fetch, report", run_nightly, example_dags),
    Scenario(
        "nightly-null-date",
        "example DAG triggered without a logical date (like `airflow dags trigger`)",
        run_nightly_null_date,
        example_dags,
    ),
    Scenario(
        "large-job", "example DAG large_job: 3 batches, a retry round, one merged result", run_large_job, example_dags
    ),
    Scenario(
        "job-crash-after-create",
        "SIGKILL the batch job after its 2nd create returned (equal shards)",
        run_job_crash_after_create,
        job_chaos_dag,
    ),
    Scenario("job-crash-mid-export", "SIGKILL the batch job mid-export", run_job_crash_mid_export, job_chaos_dag, True),
    Scenario("crash-after-create", "SIGKILL create after the API answered", run_crash_after_create, chaos_dag, True),
    Scenario("crash-after-record", "SIGKILL create after recording the id", run_crash_after_record, chaos_dag, True),
    Scenario("triggerer-kill", "SIGKILL the triggerer during the wait", run_triggerer_kill, chaos_dag, True),
    Scenario("api-outage", "API refuses connections for 20 s during the wait", run_api_outage, chaos_dag, True),
    Scenario("results-cut", "results stream cut twice mid-way", run_results_cut, chaos_dag, True),
    Scenario("fetch-killed", "SIGKILL the fetch mid-way", run_fetch_killed, chaos_dag, True),
]

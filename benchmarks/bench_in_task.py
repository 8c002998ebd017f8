"""Create and export as users run them: operators inside task runs of ``dag.test()``, first and second of a process.

A bare ``execute()`` after warm-ups hides what a task pays once per process (imports,
Airflow's filesystem discovery, the first connection). Here one DAG run, in one fresh
process (the way ``airflow dags test`` and a worker's task process run it), does:

- ``create_ours``: ``CreateBatchOperator(requests_path=...)`` on a 100,000-request JSONL;
- ``create_official``: a ``@task`` that does what users of ``airflow.providers.anthropic`` do:
  read the JSONL into a list and call ``AnthropicHook.create_batch``;
- ``fetch_ours_1``, ``fetch_ours_2``: ``FetchBatchResultsOperator`` of a 100,000-result batch to
  ``file://`` (the first and the second export of the process);
- ``fetch_official_1``, ``fetch_official_2``: a ``@task`` streaming the same results with
  ``AnthropicHook.stream_batch_results`` and writing each result's JSON, twice.

Each task's own wall time is measured inside the task (around ``execute``), and its peak RSS
is the process's high-water mark reset just before the task (``/proc/self/clear_refs``).
Tasks run in the order above; the official tasks run after ours, so ours pay the process's
one-time costs. The emulator runs in its own process.

    .venv/bin/python benchmarks/bench_in_task.py [--requests 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from emulator_process import start_emulator

KEY = "sk-ant-bench-in-task"
REPO = Path(__file__).resolve().parents[1]

DAG_TEMPLATE = """
from __future__ import annotations

import json
import time

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_anthropix.operators.create import CreateBatchOperator
from airflow_provider_anthropix.operators.fetch import FetchBatchResultsOperator

TIMES = {times!r}
REQUESTS = {requests!r}
BATCH_ID = {batch_id!r}
OUT = {out!r}


def peak_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def timed(name, function):
    reset_peak()
    started = time.perf_counter()
    value = function()
    seconds = time.perf_counter() - started
    with open(TIMES, "a") as fh:
        fh.write(json.dumps({{"task": name, "seconds": seconds, "peak_rss_mb": peak_mb()}}) + "\\n")
    return value


class TimedCreate(CreateBatchOperator):
    # Also measures the estimate's share: its per-request tally during validation and its API calls.

    def execute(self, context):
        from airflow_provider_anthropix.cost.estimate import CostTally

        spent = [0.0]
        observe = CostTally.observe

        def timed_observe(tally, *args, **kwargs):
            started = time.perf_counter()
            observe(tally, *args, **kwargs)
            spent[0] += time.perf_counter() - started

        CostTally.observe = timed_observe
        estimate = self._estimate

        def timed_estimate(*args):
            started = time.perf_counter()
            estimate(*args)
            spent[0] += time.perf_counter() - started

        self._estimate = timed_estimate
        try:
            return timed(self.task_id, lambda: super(TimedCreate, self).execute(context))
        finally:
            CostTally.observe = observe
            with open(TIMES, "a") as fh:
                fh.write(json.dumps({{"task": "estimate_share", "seconds": spent[0], "peak_rss_mb": 0}}) + "\\n")


class TimedFetch(FetchBatchResultsOperator):
    def execute(self, context):
        return timed(self.task_id, lambda: super(TimedFetch, self).execute(context))


def official_create():
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    def run():
        with open(REQUESTS) as fh:
            requests = [json.loads(line) for line in fh if line.strip()]
        return AnthropicHook().create_batch(requests).id

    return timed("create_official", run)


def official_fetch(name):
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    def run():
        hook = AnthropicHook()
        with open(f"{{OUT}}/{{name}}.jsonl", "w", encoding="utf-8") as fh:
            for result in hook.stream_batch_results(BATCH_ID):
                fh.write(result.model_dump_json() + "\\n")

    timed(name, run)


with DAG("bench_in_task", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
    create_ours = TimedCreate(task_id="create_ours", requests_path=REQUESTS)
    create_official = task(task_id="create_official")(official_create)()
    fetch_1 = TimedFetch(task_id="fetch_ours_1", batch_id=BATCH_ID, destination=f"file://{{OUT}}/ours-1", progress_interval=3600)
    fetch_2 = TimedFetch(task_id="fetch_ours_2", batch_id=BATCH_ID, destination=f"file://{{OUT}}/ours-2", progress_interval=3600)
    official_1 = task(task_id="fetch_official_1")(official_fetch)("fetch_official_1")
    official_2 = task(task_id="fetch_official_2")(official_fetch)("fetch_official_2")
    create_ours >> create_official >> fetch_1 >> fetch_2 >> official_1 >> official_2
"""


def make_results_batch(url: str, count: int) -> str:
    """A batch of ``count`` requests created and ended on the emulator, for the fetches to download."""
    import requests

    body = {
        "requests": [
            {
                "custom_id": f"r-{i:06d}",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 1024,
                    "messages": [{"role": "user", "content": f"q {i}"}],
                },
            }
            for i in range(count)
        ]
    }
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21"}
    response = requests.post(f"{url}/v1/messages/batches", json=body, headers=headers, timeout=600)
    response.raise_for_status()
    batch_id = str(response.json()["id"])
    requests.post(f"{url}/_emulator/clock", json={"advance": 3600}, headers=headers, timeout=60).raise_for_status()
    return batch_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_create import write_input

    work = Path(tempfile.mkdtemp(prefix="bench-in-task-"))
    emulator, url = start_emulator(KEY, "--processing-seconds", "600", "--admin", "--result-bytes", "1600")
    try:
        requests_path = work / "requests.jsonl"
        size = write_input(str(requests_path), args.requests, 1400)
        batch_id = make_results_batch(url, args.requests)
        out = work / "out"
        out.mkdir()
        dags = work / "dags"
        dags.mkdir()
        times = work / "times.jsonl"
        (dags / "bench_in_task.py").write_text(
            DAG_TEMPLATE.format(times=str(times), requests=str(requests_path), batch_id=batch_id, out=str(out))
        )
        home = work / "home"
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                "AIRFLOW_CONN_ANTHROPIX_DEFAULT": json.dumps(
                    {"conn_type": "anthropix", "password": KEY, "host": url, "extra": {"timeout": [10, 600]}}
                ),
                "AIRFLOW_CONN_ANTHROPIC_DEFAULT": json.dumps({"conn_type": "anthropic", "password": KEY, "host": url}),
            }
        )
        airflow = str(Path(sys.executable).parent / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        print(f"input: {args.requests:,} requests ({size / 1e6:.0f} MB JSONL); results batch {batch_id}", flush=True)
        started = time.perf_counter()
        run = subprocess.run([airflow, "dags", "test", "bench_in_task"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if run.returncode != 0 or not times.exists():
            raise SystemExit(f"the DAG run failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        rows = {row["task"]: row for row in map(json.loads, times.read_text().splitlines())}
        result_mb = (out / "ours-1" / "results.jsonl").stat().st_size / 1e6
    finally:
        emulator.terminate()
        emulator.wait(30)

    print(f"\n{'task (in dag.test, one process)':34} {'wall':>8} {'peak RSS':>10}")
    print("-" * 55)
    for name in (
        "create_ours",
        "create_official",
        "fetch_ours_1",
        "fetch_ours_2",
        "fetch_official_1",
        "fetch_official_2",
    ):
        row = rows[name]
        print(f"{name:34} {row['seconds']:>7.2f}s {row['peak_rss_mb']:>7.0f} MB")
    print(f"\nwhole `airflow dags test`: {wall:.1f} s; results {result_mb:.0f} MB")
    create = rows["create_official"]["seconds"] / rows["create_ours"]["seconds"]
    first = rows["fetch_official_1"]["seconds"] / rows["fetch_ours_1"]["seconds"]
    second = rows["fetch_official_2"]["seconds"] / rows["fetch_ours_2"]["seconds"]
    share = rows["estimate_share"]["seconds"]
    print(f"create: ours {create:.1f}x faster; export: first of the process {first:.1f}x, second {second:.1f}x")
    print(
        f"the cost estimate inside create_ours (model check, sampling, token counts): {share:.2f} s, "
        f"{100 * share / rows['create_ours']['seconds']:.0f}% of the create"
    )
    print(
        textwrap.dedent("""
        (the first create and the first export pay the process's one-time costs: importing the
        HTTP clients and msgspec/pyarrow paths, the first connection; the official tasks run later
        and pay only theirs)""").strip()
    )


if __name__ == "__main__":
    main()

"""Table in, table out, 1,000,000 rows: ``BatchTableOperator`` side by side with the hand-written path.

The input is a Parquet file (written with pyarrow's defaults, as ``DataFrame.to_parquet`` writes
it) of ``id`` (string, a valid custom_id), ``review`` (200-400 bytes of words, distinct) and
``stars`` (int); each row becomes one request "Triage this review: {{ review }}" for
``claude-haiku-4-5`` (``max_tokens`` 300) whose answer must hold to a four-field schema
(``sentiment`` enum, ``score`` integer, ``topics`` array of strings, ``summary`` string), in
batches of 100,000. The emulator answers with JSON drawn from that schema.

Each side is one ``airflow dags test`` run of its own DAG, in its own fresh process (the way
a worker's task process runs it; each phase is the first of its process, one-time costs
included), against its own fresh emulator in another process:

- **ours**: ``BatchTableOperator`` as users run it (``deferrable=True``). Phase 1 is its
  ``execute``, up to the deferral: rows read and rendered, the job's split + validate +
  estimate, and the create of every batch. The harness then moves the emulator's clock on
  (every batch ends); the trigger fires and phase 2 is ``execute_complete``: the job's round
  end and the table export (answers parsed, checked against the schema, joined to the input
  rows, Parquet published with its manifest).
- **peer**: what a DAG author writes today with ``airflow.providers.anthropic``, as two
  ``@task`` s. Phase 1: pandas reads the Parquet, ``jinja2.Template.render`` per row, the
  requests (with ``output_config``) are written as JSONL and sent as 10 lists with
  ``AnthropicHook.create_batch``. Phase 2: each batch's results downloaded as JSONL with plain
  ``requests`` (faster than the SDK's typed ``stream_batch_results``, ~9 s per 100,000 in
  bench_in_task), ``json.loads`` of each line and of each answer text, a DataFrame merged back
  on the key, ``to_parquet``. It does not check answers against the schema.

Each phase's wall time is measured inside its task, and its peak RSS is the process's
high-water mark reset just before the phase (``/proc/self/clear_refs``), so it includes what
the ``dags test`` process holds already (its RSS at the phase's start is printed too; in a
deployment, ``execute_complete`` runs in a new task process after the deferral, while
``dags test`` runs it in the same one). Also printed per phase: the emulator's CPU seconds
and the time the side waited on it (in create calls; until each results download's first
byte), the part of the wall time that is the emulator's rather than the side's. The emulator
renders a batch's results once, when it has ended, and then serves them from memory; so that
the second phase measures the side and not that rendering, the harness moves the clock on and
then downloads every batch's results once itself, outside the measured phases (its time and
the emulator's CPU for it are printed apart).

    .venv/bin/python benchmarks/bench_table.py [--rows 1000000] [--batch-rows 100000] [--sides ours,peer] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from emulator_process import start_emulator

KEY = "sk-ant-bench-table"
PROMPT = "Triage this review: {{ review }}"
MODEL = "claude-haiku-4-5"
MAX_TOKENS = 300
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "topics": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "summary": {"type": "string", "maxLength": 200},
    },
    "required": ["sentiment", "score", "topics", "summary"],
    "additionalProperties": False,
}
WORDS = [
    "delivery",
    "late",
    "box",
    "damaged",
    "great",
    "value",
    "refund",
    "support",
    "friendly",
    "slow",
    "fast",
    "quality",
    "price",
    "size",
    "colour",
    "battery",
    "screen",
    "sound",
    "broke",
    "again",
    "would",
    "buy",
    "never",
    "recommend",
    "packaging",
    "instructions",
    "missing",
    "parts",
    "works",
    "perfectly",
    "disappointed",
    "excellent",
    "average",
    "cheap",
    "sturdy",
    "flimsy",
]
#: Targets from issue 22 (ours): seconds and peak RSS (MB) per phase.
TARGETS = {"render + validate + split + create": (60.0, 500.0), "round end + join": (30.0, 600.0)}

DAG_TEMPLATE = """
from __future__ import annotations

import json
import os
import time

import pendulum
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_anthropix.operators.table import BatchTableOperator

TIMES = {times!r}
TABLE = {table!r}
OUT = {out!r}
URL = {url!r}
KEY = {key!r}
PROMPT = {prompt!r}
SCHEMA = {schema!r}
DEFAULTS = {{"model": {model!r}, "max_tokens": {max_tokens!r}}}
BATCH_ROWS = {batch_rows!r}
EMULATOR_PID = {emulator_pid!r}
PROFILE = {profile!r}
#: Seconds the phase spent waiting on the emulator: in create calls, and until each results download's first byte.
WAITS = {{"create": 0.0, "results": 0.0}}


def rss_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def emulator_cpu():
    with open(f"/proc/{{EMULATOR_PID}}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def waited(kind, started):
    WAITS[kind] += time.perf_counter() - started


def instrument_ours():
    # Harness: what our hook's create calls and results downloads wait for (behaviour unchanged).
    from airflow_provider_anthropix.hooks.anthropix import AnthropixHook

    create, results = AnthropixHook.create_batch, AnthropixHook.iter_result_bytes

    def create_batch(self, requests):
        started = time.perf_counter()
        try:
            return create(self, requests)
        finally:
            waited("create", started)

    def iter_result_bytes(self, batch, chunk_size=1 << 16):
        started = time.perf_counter()
        first = True
        for chunk in results(self, batch, chunk_size):
            if first:
                waited("results", started)
                first = False
            yield chunk

    AnthropixHook.create_batch, AnthropixHook.iter_result_bytes = create_batch, iter_result_bytes


instrument_ours()


def advance_emulator():
    # Harness, not measured: every batch in flight ends (the admin endpoint takes the API key), then
    # each batch's results are downloaded once, so the emulator has rendered them all (it renders a
    # batch's results once, after it ends, and serves them from memory) before the side's next phase.
    import requests

    headers = {{"x-api-key": KEY, "anthropic-version": "2023-06-01"}}
    requests.post(f"{{URL}}/_emulator/clock", json={{"advance": 3600}}, headers=headers, timeout=60).raise_for_status()
    started, cpu = time.perf_counter(), emulator_cpu()
    listed = requests.get(f"{{URL}}/v1/messages/batches", params={{"limit": 1000}}, headers=headers, timeout=60)
    listed.raise_for_status()
    batches = listed.json()["data"]
    for batch in batches:
        with requests.get(batch["results_url"], headers=headers, stream=True, timeout=600) as response:
            response.raise_for_status()
            for _ in response.iter_content(1 << 20):
                pass
    with open(TIMES, "a") as fh:
        fh.write(json.dumps({{"harness": "emulator renders every batch's results (not measured)",
                             "seconds": time.perf_counter() - started, "emulator_cpu": emulator_cpu() - cpu,
                             "batches": len(batches)}}) + "\\n")


def timed(name, function, deferral_ok=False):
    reset_peak()
    before = rss_mb("VmRSS")
    WAITS.update(create=0.0, results=0.0)
    cpu = emulator_cpu()
    profile = None
    if PROFILE:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    started = time.perf_counter()
    deferred = None
    try:
        value = function()
    except TaskDeferred as exc:
        if not deferral_ok:
            raise
        deferred, value = exc, None
    seconds = time.perf_counter() - started
    if profile is not None:
        profile.disable()
        profile.dump_stats(f"{{PROFILE}}/{{name.replace(':', '').replace(' ', '-')}}.prof")
    figures = {{
        "phase": name,
        "seconds": seconds,
        "peak_rss_mb": rss_mb("VmHWM"),
        "rss_before_mb": before,
        "emulator_cpu": emulator_cpu() - cpu,
        "waits": dict(WAITS),
    }}
    with open(TIMES, "a") as fh:
        fh.write(json.dumps(figures) + "\\n")
    if deferred is not None:
        advance_emulator()
        raise deferred
    return value


class TimedTable(BatchTableOperator):
    def execute(self, context):
        return timed("ours: render + validate + split + create",
                     lambda: super(TimedTable, self).execute(context), deferral_ok=True)

    def execute_complete(self, context, event=None):
        return timed("ours: round end + join", lambda: super(TimedTable, self).execute_complete(context, event))


def peer_create():
    import jinja2
    import pandas as pd
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    def run():
        frame = pd.read_parquet(TABLE)
        template = jinja2.Template(PROMPT)
        output_config = {{"format": {{"type": "json_schema", "schema": SCHEMA}}}}
        requests = [
            {{
                "custom_id": row.id,
                "params": {{
                    **DEFAULTS,
                    "messages": [{{"role": "user", "content": template.render(review=row.review)}}],
                    "output_config": output_config,
                }},
            }}
            for row in frame.itertuples(index=False)
        ]
        with open(f"{{OUT}}/peer-requests.jsonl", "w", encoding="utf-8") as fh:
            for request in requests:
                fh.write(json.dumps(request) + "\\n")
        hook = AnthropicHook()
        batch_ids = []
        for i in range(0, len(requests), BATCH_ROWS):
            started = time.perf_counter()
            batch_ids.append(hook.create_batch(requests[i : i + BATCH_ROWS]).id)
            waited("create", started)
        return batch_ids

    batch_ids = timed("peer: render + write + create", run)
    advance_emulator()
    return batch_ids


def peer_join(batch_ids):
    import pandas as pd
    import requests
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

    def run():
        hook = AnthropicHook()
        client = hook.conn
        headers = {{"x-api-key": client.api_key, "anthropic-version": "2023-06-01"}}
        path = f"{{OUT}}/peer-results.jsonl"
        with open(path, "wb") as fh:
            for batch_id in batch_ids:
                url = hook.get_batch(batch_id).results_url
                started = time.perf_counter()
                with requests.get(url, headers=headers, stream=True, timeout=600) as response:
                    response.raise_for_status()
                    for number, chunk in enumerate(response.iter_content(1 << 20)):
                        if number == 0:
                            waited("results", started)
                        fh.write(chunk)
        rows = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                result = json.loads(line)
                answer = {{"custom_id": result["custom_id"], "result_type": result["result"]["type"]}}
                message = result["result"].get("message")
                if message is not None:
                    text = "".join(b["text"] for b in message["content"] if b["type"] == "text")
                    try:
                        answer.update(json.loads(text))
                    except ValueError:
                        answer["error"] = "not JSON"
                    answer["input_tokens"] = message["usage"]["input_tokens"]
                    answer["output_tokens"] = message["usage"]["output_tokens"]
                rows.append(answer)
        answers = pd.DataFrame(rows)
        frame = pd.read_parquet(TABLE)
        joined = frame.merge(answers, left_on="id", right_on="custom_id", how="left")
        joined.to_parquet(f"{{OUT}}/peer-output.parquet")
        return len(joined)

    return timed("peer: download + parse + merge + write", run)


with DAG("bench_table_ours", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as ours:
    TimedTable(
        task_id="table",
        table_path=TABLE,
        destination=f"file://{{OUT}}/ours",
        id_column="id",
        prompt=PROMPT,
        output_schema=SCHEMA,
        default_params=DEFAULTS,
        max_requests_per_batch=BATCH_ROWS,
        deferrable=True,
        poll_interval=1.0,
    )

with DAG("bench_table_peer", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as peer:
    task(task_id="join")(peer_join)(task(task_id="create")(peer_create)())
"""


def write_table(path: str, rows: int) -> int:
    """``rows`` rows of id / review / stars, written with pyarrow's defaults (one row group up to 1Mi rows).

    Each review is three fragments of words from pools of different prime sizes, so reviews
    (200-400 bytes) repeat only every few hundred million rows and the Parquet file is as
    large as real text makes it, while writing a million rows stays quick.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(22)

    def pool(count: int) -> list[str]:
        fragments = []
        for _ in range(count):
            size = rng.randint(66, 132)
            words: list[str] = []
            while sum(len(w) + 1 for w in words) < size:
                words.append(rng.choice(WORDS))
            fragments.append(" ".join(words))
        return fragments

    first, second, third = pool(1009), pool(1013), pool(1019)
    reviews = [
        f"{first[i % 1009]}. {second[(i * 7) % 1013]}, {third[(i * 13) % 1019]}" for i in range(rows)
    ]  # fmt: skip
    table = pa.table(
        {
            "id": pa.array([f"r{i:07d}" for i in range(rows)], pa.string()),
            "review": pa.array(reviews, pa.string()),
            "stars": pa.array([1 + i % 5 for i in range(rows)], pa.int64()),
        }
    )
    pq.write_table(table, path)
    return os.path.getsize(path)


def run_side(side: str, work: Path, table: str, batch_rows: int, profile: str | None) -> dict[str, Any]:
    """One ``airflow dags test`` of the side's DAG, with a fresh emulator; the phases it recorded."""
    emulator, url = start_emulator(KEY, "--processing-seconds", "600", "--admin")
    try:
        out = work / side
        out.mkdir()
        dags = work / f"dags-{side}"
        dags.mkdir()
        times = work / f"times-{side}.jsonl"
        source = DAG_TEMPLATE.format(
            times=str(times),
            table=table,
            out=str(out),
            url=url,
            key=KEY,
            prompt=PROMPT,
            schema=SCHEMA,
            model=MODEL,
            max_tokens=MAX_TOKENS,
            batch_rows=batch_rows,
            emulator_pid=emulator.pid,
            profile=profile,
        )
        (dags / "bench_table.py").write_text(source)
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(work / f"home-{side}"),
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
        print(f"running {side} ...", flush=True)
        started = time.perf_counter()
        run = subprocess.run(
            [airflow, "dags", "test", f"bench_table_{side}"], env=env, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - started
        records = [json.loads(line) for line in times.read_text().splitlines()] if times.exists() else []
        phases = [r for r in records if "phase" in r]
        renders = [r for r in records if "harness" in r]
        if run.returncode != 0 or len(phases) != 2:
            raise SystemExit(f"the {side} DAG run failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}")
        result: dict[str, Any] = {"side": side, "phases": phases, "renders": renders, "wall": wall}
        if side == "ours":
            manifest = json.loads((out / "ours" / "_manifest.json").read_text())
            result["rows"], result["counts"] = manifest["rows"], manifest["counts"]
        else:
            import pyarrow.parquet as pq

            result["rows"] = pq.ParquetFile(out / "peer-output.parquet").metadata.num_rows
        return result
    finally:
        emulator.terminate()
        emulator.wait(30)
        shutil.rmtree(work / side, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--sides", default="ours,peer")
    parser.add_argument(
        "--profile", metavar="DIR", help="write each phase's cProfile stats to DIR (slows Python-bound phases ~2x)"
    )
    args = parser.parse_args()
    if args.profile:
        args.profile = os.path.abspath(args.profile)
        os.makedirs(args.profile, exist_ok=True)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]

    work = Path(tempfile.mkdtemp(prefix="bench-table-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        table = str(work / "reviews.parquet")
        started = time.perf_counter()
        size = write_table(table, args.rows)
        print(
            f"input: {args.rows:,} rows, {size / 1e6:,.0f} MB Parquet ({time.perf_counter() - started:.0f} s to write); "
            f"batches of {args.batch_rows:,}",
            flush=True,
        )
        for side in sides:
            results[side] = run_side(side, work, table, args.batch_rows, args.profile)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\n{'phase (first of its dags-test process)':42} {'wall':>7} {'peak RSS':>9} {'at start':>9} "
        f"{'emulator CPU':>12} {'waits':>7} {'wall - waits':>12}"
    )
    print("-" * 104)
    for result in results.values():
        for phase in result["phases"]:
            waits = sum(phase["waits"].values())
            print(
                f"{phase['phase']:42} {phase['seconds']:>6.1f}s {phase['peak_rss_mb']:>6.0f} MB {phase['rss_before_mb']:>6.0f} MB "
                f"{phase['emulator_cpu']:>11.1f}s {waits:>6.1f}s {phase['seconds'] - waits:>11.1f}s"
            )
        for render in result["renders"]:
            print(
                f"  (between the phases, not measured: the emulator rendered {render['batches']} batches' results in "
                f"{render['seconds']:.1f} s, {render['emulator_cpu']:.1f} s of its CPU)"
            )
        print(f"  (whole `airflow dags test`: {result['wall']:.0f} s; {result['rows']:,} rows out)")
    print(
        "waits: in create calls (the peer's include the SDK serialising its lists) and until each results\n"
        "download's first byte; the harness has the emulator render every batch's results before the\n"
        "second phase (not measured), so what remains is serving them from memory. The emulator runs\n"
        "on the same 2 cores, so its CPU time is taken from the side measured as well."
    )
    if "ours" in results:
        print(f"ours' outcomes: {results['ours']['counts']}")
        for phase in results["ours"]["phases"]:
            name = phase["phase"].removeprefix("ours: ")
            seconds, mb = TARGETS[name]
            waits = sum(phase["waits"].values())
            print(
                f"target {name}: <= {seconds:.0f} s and <= {mb:.0f} MB: "
                f"time {'met' if phase['seconds'] <= seconds else 'MISSED'} ({phase['seconds']:.1f} s; "
                f"{phase['seconds'] - waits:.1f} s without the emulator waits), "
                f"memory {'met' if phase['peak_rss_mb'] <= mb else 'MISSED'} ({phase['peak_rss_mb']:.0f} MB)"
            )
    if "ours" in results and "peer" in results:
        for label, mine, theirs in zip(
            ("render + create", "join"), results["ours"]["phases"], results["peer"]["phases"], strict=True
        ):
            print(
                f"{label}: peer/ours time {theirs['seconds'] / mine['seconds']:.1f}x, "
                f"peak RSS {theirs['peak_rss_mb'] / mine['peak_rss_mb']:.1f}x"
            )


if __name__ == "__main__":
    main()

"""What a DAG file pays to import the operators: ours vs the official provider's, over ``import airflow.sdk``.

The dag-processor parses every DAG file again and again; whatever a DAG's imports pull in
is paid on every parse of a fresh process. This measures, in fresh interpreters (one per
sample, the three cases interleaved so a busy machine hurts them alike):

- ``airflow.sdk``: ``import airflow.sdk`` alone (the floor every DAG file pays);
- ``ours``: ``import airflow.sdk``, then our operators, sensor and triggers (create, fetch,
  cancel, job, split, sensors.batch, triggers.batch, triggers.job) and, when present, the UI
  plugin (Airflow imports plugins in every task process);
- ``ours, no trig``: what a DAG file imports: the operators and the sensor, without the
  triggers (only the triggerer loads those, and with them Airflow's ``airflow.triggers.base``,
  about half of the ``ours`` figure) and without the plugin;
- ``official``: ``import airflow.sdk``, then ``airflow.providers.anthropic.operators.*``.

Each sample reports the time of ``import airflow.sdk`` and the time of the imports after it,
measured inside the interpreter. The figure that counts is the median of the second (the cost
over ``airflow.sdk``); the target for ours is <= 50 ms. The heavy modules each case loads on
top of ``airflow.sdk`` are listed as well.

Two rounds, because the bytecode cache decides much of the figure:

- ``bytecode cached``: what a deployment runs. ``pip install`` and Airflow's images compile
  ``.pyc`` files at install time; here the probes share a private ``PYTHONPYCACHEPREFIX``,
  filled by one unmeasured run per case. This is the figure the target is about.
- ``no bytecode cache``: the first parse after an install that did not compile (``uv pip``
  without ``--compile-bytecode``, or ``PYTHONDONTWRITEBYTECODE=1`` as on this machine):
  every module is compiled from source, in every process.

    .venv/bin/python benchmarks/bench_import.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pkgutil
import statistics
import subprocess
import sys
import tempfile

OURS = [
    "airflow_provider_anthropix.operators.create",
    "airflow_provider_anthropix.operators.fetch",
    "airflow_provider_anthropix.operators.cancel",
    "airflow_provider_anthropix.operators.job",
    "airflow_provider_anthropix.operators.split",
    "airflow_provider_anthropix.sensors.batch",
    "airflow_provider_anthropix.triggers.batch",
    "airflow_provider_anthropix.triggers.job",
]
#: Imported by Airflow in every task process once the plugin exists; counted when it does.
OPTIONAL_OURS = ["airflow_provider_anthropix.plugins"]
HEAVY = ["requests", "httpx", "msgspec", "pyarrow", "starlette", "uvicorn", "anthropic", "fsspec"]

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
before = set(sys.modules)
for name in {modules!r}:
    __import__(name)
t2 = time.perf_counter()
heavy = sorted(m for m in {heavy!r} if m in sys.modules and m not in before)
print(json.dumps({{"sdk": t1 - t0, "extra": t2 - t1, "heavy": heavy, "modules": len(set(sys.modules) - before)}}))
"""


def official_modules() -> list[str]:
    """Every module of the official provider's operators package (``agent``, ``batch``, ...)."""
    spec = importlib.util.find_spec("airflow.providers.anthropic.operators")
    if spec is None or not spec.submodule_search_locations:
        return []
    names = [
        f"airflow.providers.anthropic.operators.{info.name}"
        for info in pkgutil.iter_modules(spec.submodule_search_locations)
    ]
    return sorted(names)


def our_modules() -> list[str]:
    """Our DAG-facing modules, plus the plugin package when this checkout has one."""
    extra = [name for name in OPTIONAL_OURS if importlib.util.find_spec(name) is not None]
    return OURS + extra


def probe_env(cache_dir: str, *, write: bool) -> dict[str, str]:
    """The environment of a probe: its bytecode read from (and, when ``write``, written to) ``cache_dir`` only."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=cache_dir)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def sample(modules: list[str], env: dict[str, str]) -> dict[str, object]:
    """One fresh interpreter: time ``import airflow.sdk``, then ``modules`` on top of it."""
    code = PROBE.format(modules=modules, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"importing {modules} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(cases: dict[str, list[str]], repeats: int, env: dict[str, str]) -> dict[str, list[dict[str, object]]]:
    """``repeats`` samples of every case, interleaved so a busy machine hurts them alike."""
    samples: dict[str, list[dict[str, object]]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, modules in cases.items():
            samples[name].append(sample(modules, env))
    return samples


def report(title: str, samples: dict[str, list[dict[str, object]]], repeats: int) -> dict[str, float]:
    """Print one round's table and return the median cost over ``airflow.sdk`` of each case, in ms."""
    print(f"{title}: import cost in fresh interpreters, median of {repeats} (interleaved)")
    print(f"{'case':<13} {'import airflow.sdk':>19} {'over airflow.sdk':>17} {'new modules':>12}  heavy modules loaded")
    medians: dict[str, float] = {}
    for name, rows in samples.items():
        sdk = statistics.median(float(r["sdk"]) for r in rows) * 1000  # type: ignore[arg-type]
        extra = statistics.median(float(r["extra"]) for r in rows) * 1000  # type: ignore[arg-type]
        medians[name] = extra
        heavy = ", ".join(rows[-1]["heavy"]) or "-"  # type: ignore[arg-type]
        count = rows[-1]["modules"]
        print(f"{name:<13} {sdk:>16.0f} ms {extra:>14.1f} ms {count:>12}  {heavy}")
    ours = medians["ours"]
    if "official" in medians and ours > 0:
        print(f"official over airflow.sdk: {medians['official']:.0f} ms ({medians['official'] / ours:.0f}x ours)")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="fresh interpreters per case and round (default 9)")
    parser.add_argument("--json", action="store_true", help="print the medians as one JSON line as well")
    args = parser.parse_args()

    dag_file = [name for name in OURS if ".triggers." not in name]
    cases = {"airflow.sdk": [], "ours": our_modules(), "ours, no trig": dag_file, "official": official_modules()}
    if not cases["official"]:
        print("airflow.providers.anthropic is not installed: the official case is skipped")
        del cases["official"]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as cached, tempfile.TemporaryDirectory() as empty:
        for modules in cases.values():  # fills the cache, unmeasured: the install-time compile
            sample(modules, probe_env(cached, write=True))
        rounds = {
            "bytecode cached": probe_env(cached, write=False),
            "no bytecode cache": probe_env(empty, write=False),
        }
        for title, env in rounds.items():
            results[title] = report(title, measure(cases, args.repeats, env), args.repeats)
            print()
    ours = results["bytecode cached"]["ours"]
    verdict = "meets" if ours <= 50 else "MISSES"
    print(f"ours over airflow.sdk, bytecode cached: {ours:.1f} ms ({verdict} the <= 50 ms target)")
    print(f"ours over airflow.sdk, no bytecode cache: {results['no bytecode cache']['ours']:.1f} ms")
    print("modules (ours): " + ", ".join(m.rsplit(".", 2)[-2] + "." + m.rsplit(".", 1)[-1] for m in cases["ours"]))
    if args.json:
        print(json.dumps({title: {k: round(v, 1) for k, v in medians.items()} for title, medians in results.items()}))


if __name__ == "__main__":
    main()

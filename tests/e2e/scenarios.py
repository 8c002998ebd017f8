"""The scenarios ``tests/e2e/run.py`` runs against the deployment, and the checks they share."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from deployment import Deployment, E2EFailure, say

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

    def run_dag(self, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 240) -> tuple[str, str]:
        """Trigger, wait, and return ``(run_id, state)``."""
        self.dep.wait_dag(dag_id)
        run_id = self.dep.trigger(dag_id, conf)
        self.runs.append((dag_id, run_id))
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


def local_path(uri: str) -> Path:
    """A ``file://`` URI or a plain path as a local path."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(unquote(parts.path if parts.scheme else uri))
    raise E2EFailure(f"the e2e run writes to local files only; got {uri!r}")


def jsonl_lines(path: Path) -> int:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.count(b"\n")


def check_manifest(manifest_uri: str) -> dict[str, Any]:
    """Check that the manifest describes files that exist, are complete and add up.

    Works with the probe DAG's manifest and the FetchBatchResultsOperator's: files are
    listed as strings or as objects with ``path``/``uri`` and optional ``bytes``/``sha256``/``lines``.
    """
    path = local_path(manifest_uri)
    if not path.is_file():
        raise E2EFailure(f"manifest {manifest_uri} does not exist")
    manifest = json.loads(path.read_text())
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
        file_path = local_path(str(ref))
        if not file_path.is_absolute():
            file_path = path.parent / file_path
        if not file_path.is_file():
            raise E2EFailure(f"manifest lists {ref} but it does not exist")
        data = file_path.read_bytes()
        size = entry.get("bytes", entry.get("size"))
        if size is not None and int(size) != len(data):
            raise E2EFailure(f"{ref}: manifest says {size} bytes, file has {len(data)}")
        digest = hashlib.sha256(data).hexdigest()
        if entry.get("sha256") and entry["sha256"] != digest:
            raise E2EFailure(f"{ref}: sha256 differs from the manifest")
        digests.append(digest)
        total_bytes += len(data)
        if file_path.name.endswith((".jsonl", ".jsonl.gz")):
            lines = jsonl_lines(file_path)
            if entry.get("lines") is not None and int(entry["lines"]) != lines:
                raise E2EFailure(f"{ref}: manifest says {entry['lines']} lines, file has {lines}")
            total_lines += lines
    counts = manifest.get("counts") or {}
    expected = counts.get("total")
    if expected is None and counts:
        expected = sum(int(v) for k, v in counts.items() if k in ("succeeded", "errored", "canceled", "expired"))
    if expected is not None and total_lines and int(expected) != total_lines:
        raise E2EFailure(f"manifest counts {counts} do not add up to the {total_lines} lines written")
    return {"manifest": str(path), "files": len(files), "bytes": total_bytes, "lines": total_lines, "sha256": digests}


# -- scenarios ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    name: str
    doc: str
    run: Callable[[Context], dict[str, Any]]
    dag_files: Callable[[Path], list[Path]]
    chaos: bool = False


def probe_dag(_repo: Path) -> list[Path]:
    return [Path(__file__).resolve().parent / "dags" / "anthropix_e2e_probe.py"]


def run_probe(ctx: Context) -> dict[str, Any]:
    """The harness itself: a hook-only DAG creates, waits, fetches and writes a manifest."""
    before = ctx.batches_created()
    run_id, state = ctx.run_dag(PROBE_DAG, {"requests": 20})
    ctx.expect_success(PROBE_DAG, run_id, state)
    value = ctx.dep.xcom(PROBE_DAG, run_id, "fetch")
    checked = check_manifest(value["manifest"])
    created = ctx.batches_created() - before
    if created != 1:
        raise E2EFailure(f"expected exactly 1 batch, the emulator saw {created}")
    if checked["lines"] != 20:
        raise E2EFailure(f"expected 20 result lines, got {checked['lines']}")
    return {"run_id": run_id, "batches_created": created, "lines": checked["lines"], "bytes": checked["bytes"]}


SCENARIOS: list[Scenario] = [
    Scenario("probe", "hook-only DAG through the whole deployment (harness check)", run_probe, probe_dag),
]

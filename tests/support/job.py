"""A batch job's runner on the real client, emulator and files, with crashes on demand (no DAG, no task runner)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_anthropix.api import ClientConfig, SyncClient
from airflow_provider_anthropix.emulator import EmulatorHandle
from airflow_provider_anthropix.io.export import ExportOptions
from airflow_provider_anthropix.io.job_files import JobWorkspace
from airflow_provider_anthropix.workflow.job import Done, JobRunner, JobSettings, PlanOptions, Wait
from airflow_provider_anthropix.workflow.ledger import RecoverySettings

DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 16}


class Crash(Exception):
    """Stands in for a worker killed at a chosen step."""


class CrashingWorkspace(JobWorkspace):
    """Dies before the ``crash_at``-th journal write (1-based); 0 never dies."""

    def __init__(self, *args: Any, crash_at: int = 0, crash_in_export: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_at = crash_at
        self.crash_in_export = crash_in_export
        self.saves = 0

    def save_journal(self, data: dict[str, Any]) -> None:
        self.saves += 1
        if self.saves == self.crash_at:
            raise Crash(f"killed before journal write {self.saves}")
        super().save_journal(data)

    def export(self, sources: list[Any], chunks_of: Callable[[str], Iterable[bytes]], *args: Any) -> dict[str, Any]:
        if self.crash_in_export:

            def dying(batch_id: str) -> Iterable[bytes]:
                yield from chunks_of(batch_id)
                raise Crash("killed during the export")

            return super().export(sources, dying, *args)
        return super().export(sources, chunks_of, *args)


class JobHarness:
    """A job's runner over the real client and emulator, its input on the local disk.

    The working folder and the destination are ``tmp/work`` and ``tmp/out``, or under ``store``
    (an ``ObjectStoragePath``: ``s3://...`` on the S3 API server) when one is given.
    """

    def __init__(
        self, emulator: EmulatorHandle, api_key: str, tmp: Path, store: ObjectStoragePath | None = None, **settings: Any
    ) -> None:
        self.emulator = emulator
        self.client = SyncClient(ClientConfig(api_key=api_key, base_url=emulator.url, max_retries=0))
        self.tmp = tmp
        self.input = tmp / "prompts.jsonl"
        self.destination = tmp / "out"
        self.work = tmp / "work"
        self.store = store
        self.work_path = store / "work" if store is not None else ObjectStoragePath(f"file://{self.work}")
        self.destination_path = store / "out" if store is not None else ObjectStoragePath(f"file://{self.destination}")
        self.key = "job-key"
        self.max_requests = settings.pop("max_requests_per_batch", 10)
        self.settings = JobSettings(
            recovery=RecoverySettings(checks=2, interval=0.0, clock_skew=5.0),
            plan=PlanOptions(
                default_params=DEFAULTS, max_requests_per_batch=self.max_requests, max_bytes_per_batch=1 << 20
            ),
            **settings,
        )

    def runner(self, **crash: Any) -> tuple[JobRunner, CrashingWorkspace]:
        workspace = CrashingWorkspace(
            self.work_path,
            requests_path=ObjectStoragePath(f"file://{self.input}"),
            destination=self.destination_path,
            plan=self.settings.plan,
            export_options=ExportOptions(pipeline=False),
            **crash,
        )
        runner = JobRunner(
            self.client,
            workspace,
            self.settings,
            key=self.key,
            identity={"dag_id": "d", "task_id": "t"},
            sleep=lambda s: None,
        )
        return runner, workspace

    def run(self, runner: JobRunner, *, steps: int = 50) -> Done:
        for _ in range(steps):
            step = runner.advance()
            if isinstance(step, Done):
                return step
            assert isinstance(step, Wait) and step.batch_ids
            self.emulator.advance(5)  # every batch in flight ends
        raise AssertionError("the job did not finish")

    def lines(self) -> list[bytes]:
        return (self.destination_path / "results.jsonl").read_bytes().splitlines()

    def journal(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.work_path / "job.json").read_bytes())
        return loaded

    def write_journal(self, data: Any) -> None:
        (self.work_path / "job.json").write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())

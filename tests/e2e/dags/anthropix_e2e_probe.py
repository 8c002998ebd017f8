"""A tiny DAG that proves the deployment harness works using only the hook.

It does what the example DAG does (create, wait, fetch to a file with a manifest) with
plain ``@task`` functions, so the harness can be exercised before and independently of
the operators. It is not an example of how to use the provider: see example_dags/.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from airflow.sdk import dag, get_current_context, task

from airflow_provider_anthropix.hooks.anthropix import AnthropixHook


@dag(dag_id="anthropix_e2e_probe", schedule=None, catchup=False, params={"requests": 20}, tags=["e2e"])
def anthropix_e2e_probe() -> None:
    @task
    def create() -> str:
        count = int(get_current_context()["params"]["requests"])
        requests = [
            {
                "custom_id": f"probe-{i}",
                "params": {
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": f"question {i}"}],
                },
            }
            for i in range(count)
        ]
        return AnthropixHook().create_batch(requests).id

    @task
    def wait(batch_id: str) -> str:
        hook = AnthropixHook()
        deadline = time.monotonic() + 300
        while not hook.get_batch(batch_id).is_ended:
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} did not end")
            time.sleep(1)
        return batch_id

    @task
    def fetch(batch_id: str) -> dict[str, Any]:
        run_id = get_current_context()["run_id"]
        out = Path(os.environ["ANTHROPIX_E2E_OUT"]) / "probe" / run_id.replace(":", "_")
        out.mkdir(parents=True, exist_ok=True)
        target = out / "results.jsonl"
        digest = hashlib.sha256()
        size = 0
        with target.open("wb") as f:
            for chunk in AnthropixHook().iter_result_bytes(batch_id):
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        lines = target.read_bytes().count(b"\n")
        manifest = out / "_manifest.json"
        manifest.write_text(
            json.dumps(
                {
                    "batch_id": batch_id,
                    "files": [{"path": str(target), "bytes": size, "sha256": digest.hexdigest(), "lines": lines}],
                    "counts": {"total": lines},
                }
            )
        )
        return {"batch_id": batch_id, "manifest": str(manifest), "files": [str(target)], "counts": {"total": lines}}

    fetch(wait(create()))


anthropix_e2e_probe()

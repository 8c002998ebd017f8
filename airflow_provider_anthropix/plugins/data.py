"""What the Batches page shows: the ``anthropix`` connections, their batches, and where each came from.

Runs in the api-server, which (unlike a task or the CLI) may read the metadata database:
connections come from the environment, the secrets backend and the database, as Airflow's
own connection lookup on the server reads them. The DAG run, task and estimated cost of a
batch come from the XComs of the provider's operators (a create returns the batch id, a
fetch the manifest's summary), limited to DAGs the user may read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from airflow_provider_anthropix.api.models import MessageBatch
from airflow_provider_anthropix.api.sync_client import SyncClient
from airflow_provider_anthropix.hooks.settings import config_from_connection

CONN_TYPE = "anthropix"
#: How far back the XCom scan for provenance goes (rows), newest first.
PROVENANCE_ROWS = 2000
_CREATE_OPERATORS = ("CreateBatchOperator",)
_FETCH_OPERATORS = ("FetchBatchResultsOperator",)


def _env_conn_ids() -> set[str]:
    found = set()
    for name, value in os.environ.items():
        if not name.startswith("AIRFLOW_CONN_"):
            continue
        text = value.strip()
        if text.startswith(f"{CONN_TYPE}://"):
            found.add(name.removeprefix("AIRFLOW_CONN_").lower())
            continue
        if text.startswith("{"):
            try:
                if json.loads(text).get("conn_type") == CONN_TYPE:
                    found.add(name.removeprefix("AIRFLOW_CONN_").lower())
            except (ValueError, AttributeError):
                continue
    return found


def anthropix_conn_ids() -> list[str]:
    """Every connection of type ``anthropix`` in the metadata database or the environment."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        in_db = set(session.scalars(select(Connection.conn_id).where(Connection.conn_type == CONN_TYPE)))
    return sorted(in_db | _env_conn_ids())


def client_for(conn_id: str) -> SyncClient:
    """A client with the connection's key, read the way the api-server reads connections."""
    from airflow.models.connection import Connection

    connection = Connection.get_connection_from_secrets(conn_id)
    return SyncClient(config_from_connection(conn_id, connection))


@dataclass
class Provenance:
    """Where a batch came from and what its export cost, when the provider's tasks left a trace."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    cost_usd: float | None = None
    manifest: str | None = None


def _decode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def provenance(batch_ids: set[str], readable_dags: set[str] | None) -> dict[str, Provenance]:
    """For each batch id: the create task that returned it, and the cost a fetch recorded.

    ``readable_dags`` (None: all) keeps out DAGs the user may not see.
    """
    if not batch_ids:
        return {}
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import and_, select

    query = (
        select(XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.value, TaskInstance.operator)
        .join(
            TaskInstance,
            and_(
                TaskInstance.dag_id == XComModel.dag_id,
                TaskInstance.run_id == XComModel.run_id,
                TaskInstance.task_id == XComModel.task_id,
                TaskInstance.map_index == XComModel.map_index,
            ),
        )
        .where(XComModel.key == "return_value")
        .where(TaskInstance.operator.in_(_CREATE_OPERATORS + _FETCH_OPERATORS))
        .order_by(XComModel.timestamp.desc())
        .limit(PROVENANCE_ROWS)
    )
    found: dict[str, Provenance] = {}
    with create_session() as session:
        rows = session.execute(query).all()
    for dag_id, run_id, task_id, raw, operator in rows:
        if readable_dags is not None and dag_id not in readable_dags:
            continue
        value = _decode(raw)
        if operator in _CREATE_OPERATORS and isinstance(value, str) and value in batch_ids:
            entry = found.setdefault(value, Provenance())
            if entry.task_id is None:
                entry.dag_id, entry.run_id, entry.task_id = dag_id, run_id, task_id
        elif operator in _FETCH_OPERATORS and isinstance(value, dict) and value.get("batch_id") in batch_ids:
            entry = found.setdefault(str(value["batch_id"]), Provenance())
            cost = value.get("estimated_cost_usd")
            if entry.cost_usd is None and isinstance(cost, int | float):
                entry.cost_usd = float(cost)
                entry.manifest = str(value.get("manifest") or "") or None
    return found


def batch_json(batch: MessageBatch, origin: Provenance | None) -> dict[str, Any]:
    """One batch for the JSON endpoint and the templates."""
    counts = batch.request_counts
    return {
        **batch.to_dict(),
        "done": counts.done,
        "total": counts.total,
        "percent": round(100 * counts.done / counts.total) if counts.total else 100,
        "dag_id": origin.dag_id if origin else None,
        "run_id": origin.run_id if origin else None,
        "task_id": origin.task_id if origin else None,
        "estimated_cost_usd": origin.cost_usd if origin else None,
        "manifest": origin.manifest if origin else None,
    }

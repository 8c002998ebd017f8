"""What the Batches page shows: the ``anthropix`` connections, their batches, and where each came from.

Runs in the api-server, which (unlike a task or the CLI) may read the metadata database:
connections come from the environment, the secrets backend and the database, as Airflow's
own connection lookup on the server reads them. Only connections of type ``anthropix`` are
ever used: any other is refused before a client exists, so the page never sends another
service's password anywhere.

Where a batch came from is read from the XComs of the provider's operators, limited to
DAGs the user may read:

- a ``CreateBatchOperator`` returns the batch id, and pushes its estimate (key ``estimate``);
- a ``BatchJobOperator`` pushes the ids of its batches (key
  :data:`~airflow_provider_anthropix.operators.attribution.XCOM_KEY`) each time it advances,
  its estimate, and returns the merged export's summary once done;
- a ``FetchBatchResultsOperator`` returns its export's summary (destination, cost priced from
  the results' usage) for one batch or a merged few.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow_provider_anthropix.api.models import MessageBatch
from airflow_provider_anthropix.api.sync_client import SyncClient
from airflow_provider_anthropix.hooks.settings import config_from_connection
from airflow_provider_anthropix.operators.attribution import XCOM_KEY as JOB_BATCHES_KEY

CONN_TYPE = "anthropix"
#: How far back the XCom scan for provenance goes (rows), newest first.
PROVENANCE_ROWS = 2000
#: The API keeps a batch's results this long after the batch was created (api-notes: 29 days).
RESULTS_KEPT = timedelta(days=29)
_CREATE_OPERATORS = ("CreateBatchOperator",)
_FETCH_OPERATORS = ("FetchBatchResultsOperator",)
_ESTIMATE_KEY = "estimate"
_RETURN_KEY = "return_value"


class NotAnthropixConnection(ValueError):
    """The connection exists but is not of type ``anthropix``: its password is not ours to send."""

    def __init__(self, conn_id: str, conn_type: str | None) -> None:
        super().__init__(
            f"Connection {conn_id!r} is of type {conn_type or 'none'!r}; "
            f"the Batches page only uses connections of type {CONN_TYPE!r}"
        )
        self.conn_id = conn_id


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
    """A client with the connection's key, read the way the api-server reads connections.

    The type is checked on the connection as it resolves (an environment variable may shadow
    a database row of the same id), before any setting is read from it.

    :raises NotAnthropixConnection: the connection is of another type; nothing was sent.
    """
    from airflow.models.connection import Connection

    connection = Connection.get_connection_from_secrets(conn_id)
    if connection.conn_type != CONN_TYPE:
        raise NotAnthropixConnection(conn_id, connection.conn_type)
    return SyncClient(config_from_connection(conn_id, connection))


@dataclass
class Provenance:
    """Where a batch came from and what it cost, when the provider's tasks left a trace.

    ``cost_scope`` says what the two costs cover: ``batch``, ``job`` (every batch of the job
    that made it, retry rounds included) or ``export`` (a fetch that merged several batches).
    """

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int = -1
    made_by: str | None = None
    #: expected cost at batch price, estimated before anything was sent
    estimate_usd: float | None = None
    #: cost of the results' token usage at batch price, once exported
    cost_usd: float | None = None
    cost_scope: str = "batch"
    results: str | None = None
    manifest: str | None = None
    job_batches: int | None = None


_TiKey = tuple[str, str, str, int]


def _decode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _ids_in(value: Any) -> list[str]:
    """The batch ids a job published (a list of strings; anything else counts for nothing)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


def _fetched_ids(summary: Mapping[str, Any]) -> list[str]:
    merged = summary.get("batch_ids")
    if isinstance(merged, list):
        return [b for b in merged if isinstance(b, str)]
    single = summary.get("batch_id")
    return [single] if isinstance(single, str) else []


def _xcom_rows(where: Any) -> list[tuple[Any, ...]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import and_, select

    query = (
        select(
            XComModel.dag_id,
            XComModel.run_id,
            XComModel.task_id,
            XComModel.map_index,
            XComModel.key,
            XComModel.value,
            TaskInstance.operator,
        )
        .join(
            TaskInstance,
            and_(
                TaskInstance.dag_id == XComModel.dag_id,
                TaskInstance.run_id == XComModel.run_id,
                TaskInstance.task_id == XComModel.task_id,
                TaskInstance.map_index == XComModel.map_index,
            ),
        )
        .where(where)
        .order_by(XComModel.timestamp.desc())
        .limit(PROVENANCE_ROWS)
    )
    with create_session() as session:
        return [tuple(row) for row in session.execute(query).all()]


def provenance(batch_ids: set[str], readable_dags: set[str] | None) -> dict[str, Provenance]:
    """For each batch id: the task that made it, its (or its job's) estimate and cost, and where it was exported.

    Two reads of the XCom table, newest first: the traces that name batches (a create's
    return value, a job's published ids, a fetch's summary), then the estimates and job
    summaries of the runs found. ``readable_dags`` (None: all) keeps out DAGs the user may not see.
    """
    if not batch_ids:
        return {}
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import and_, or_

    rows = _xcom_rows(
        or_(
            XComModel.key == JOB_BATCHES_KEY,
            and_(
                XComModel.key == _RETURN_KEY,
                TaskInstance.operator.in_(_CREATE_OPERATORS + _FETCH_OPERATORS),
            ),
        )
    )
    found: dict[str, Provenance] = {}
    makers: dict[_TiKey, list[Provenance]] = {}

    def made(batch_id: str, ti: _TiKey, kind: str) -> None:
        entry = found.setdefault(batch_id, Provenance())
        if entry.task_id is None:  # the newest trace wins
            entry.dag_id, entry.run_id, entry.task_id, entry.map_index = ti
            entry.made_by = kind
            if kind == "job":
                entry.cost_scope = "job"
            makers.setdefault(ti, []).append(entry)

    for dag_id, run_id, task_id, map_index, key, raw, operator in rows:
        if readable_dags is not None and dag_id not in readable_dags:
            continue
        ti: _TiKey = (str(dag_id), str(run_id), str(task_id), int(map_index))
        value = _decode(raw)
        if key == JOB_BATCHES_KEY:
            ids = _ids_in(value)
            for batch_id in batch_ids.intersection(ids):
                made(batch_id, ti, "job")
                if found[batch_id].made_by == "job" and found[batch_id].job_batches is None:
                    found[batch_id].job_batches = len(ids)
        elif operator in _CREATE_OPERATORS and isinstance(value, str) and value in batch_ids:
            made(value, ti, "create")
        elif operator in _FETCH_OPERATORS and isinstance(value, Mapping):
            ids = _fetched_ids(value)
            for batch_id in batch_ids.intersection(ids):
                entry = found.setdefault(batch_id, Provenance())
                if entry.results is None and entry.cost_usd is None:
                    entry.cost_usd = _number(value.get("estimated_cost_usd"))
                    entry.results = _text(value.get("destination"))
                    entry.manifest = _text(value.get("manifest"))
                    if len(ids) > 1 and entry.made_by != "job":
                        entry.cost_scope = "export"
    if makers:
        _add_task_figures(makers)
    return found


def _add_task_figures(makers: Mapping[_TiKey, list[Provenance]]) -> None:
    """The estimate each maker pushed, and for a job its merged export (the summary it returns)."""
    from airflow.models.xcom import XComModel
    from sqlalchemy import and_

    runs = {ti[1] for ti in makers}
    rows = _xcom_rows(and_(XComModel.run_id.in_(runs), XComModel.key.in_((_ESTIMATE_KEY, _RETURN_KEY))))
    for dag_id, run_id, task_id, map_index, key, raw, _operator in rows:
        entries = makers.get((str(dag_id), str(run_id), str(task_id), int(map_index)))
        if not entries:
            continue
        value = _decode(raw)
        if not isinstance(value, Mapping):
            continue
        for entry in entries:
            if key == _ESTIMATE_KEY and entry.estimate_usd is None:
                entry.estimate_usd = _number(value.get("expected_cost_usd"))
            elif key == _RETURN_KEY and entry.made_by == "job" and entry.cost_usd is None:
                entry.cost_usd = _number(value.get("estimated_cost_usd"))
                entry.results = _text(value.get("destination"))
                entry.manifest = _text(value.get("manifest"))


def results_until(batch: MessageBatch) -> str | None:
    """When the batch's results stop being downloadable (RFC 3339, UTC): 29 days after its creation."""
    if batch.created_at is None:
        return None
    return str((batch.created_at.in_timezone("UTC") + RESULTS_KEPT).to_iso8601_string())


def results_downloadable(batch: MessageBatch) -> bool:
    """Ended, not archived, and within the 29 days the API keeps results."""
    import pendulum

    if not batch.is_ended or batch.archived_at is not None or batch.created_at is None:
        return False
    return bool(pendulum.now("UTC") < batch.created_at + RESULTS_KEPT)


#: Error counts of ended batches already read: ended results never change, so they are kept.
_ERROR_TYPES: OrderedDict[tuple[str, str], dict[str, int]] = OrderedDict()
_ERROR_TYPES_LOCK = threading.Lock()
_ERROR_TYPES_KEPT = 256


def errors_by_type(conn_id: str, client: SyncClient, batch: MessageBatch) -> dict[str, int] | None:
    """Errored results per error type, read once from the batch's results stream (None: not readable now).

    Only an ended batch with errored requests, whose results are still kept, is read; the
    stream is decoded a block at a time (never held whole) and only the counts are kept, for
    :data:`_ERROR_TYPES_KEPT` batches, so a page reload costs nothing.
    """
    if batch.request_counts.errored == 0:
        return {} if batch.is_ended else None
    if not results_downloadable(batch):
        return None
    key = (conn_id, batch.id)
    with _ERROR_TYPES_LOCK:
        if key in _ERROR_TYPES:
            _ERROR_TYPES.move_to_end(key)
            return dict(_ERROR_TYPES[key])
    counts = _tally_errors(client.iter_result_bytes(batch, chunk_size=1 << 20))
    with _ERROR_TYPES_LOCK:
        _ERROR_TYPES[key] = counts
        while len(_ERROR_TYPES) > _ERROR_TYPES_KEPT:
            _ERROR_TYPES.popitem(last=False)
    return dict(counts)


def _tally_errors(chunks: Iterable[bytes]) -> dict[str, int]:
    from airflow_provider_anthropix.api.lines import BlockSplitter
    from airflow_provider_anthropix.io.summary import Summariser

    summary = Summariser()
    splitter = BlockSplitter()
    for chunk in chunks:
        for block in splitter.feed(chunk):
            summary.add(summary.decode_block(block))
    tail = splitter.finish()
    if tail.strip():
        summary.add(summary.decode_block(tail))
    return dict(sorted(summary.errored_by_type.items()))


def batch_json(batch: MessageBatch, origin: Provenance | None) -> dict[str, Any]:
    """One batch for the JSON endpoints and the templates."""
    counts = batch.request_counts
    origin = origin or Provenance()
    return {
        **batch.to_dict(),
        "done": counts.done,
        "total": counts.total,
        "percent": round(100 * counts.done / counts.total) if counts.total else 100,
        "dag_id": origin.dag_id,
        "run_id": origin.run_id,
        "task_id": origin.task_id,
        "map_index": origin.map_index,
        "made_by": origin.made_by,
        "estimate_usd": origin.estimate_usd,
        "cost_usd": origin.cost_usd,
        "cost_scope": origin.cost_scope,
        "job_batches": origin.job_batches,
        "results": origin.results,
        "manifest": origin.manifest,
        "results_until": results_until(batch),
    }

"""What a job tells the Batches page: the ids of the batches it made, as one small XCom.

A ``CreateBatchOperator`` returns its batch id, so the page finds its task from the return
value. A ``BatchJobOperator`` makes many batches across deferrals and returns only once it
is done, so it publishes its batch ids here each time it advances; the page (which runs in
the api-server and reads XComs from the metadata database) matches them to the batches it
lists. XComs survive a deferral, and are cleared on a new try, which the job's next advance
fills again from its journal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: XCom key of the job's batch ids (a sorted list of strings).
XCOM_KEY = "anthropix_job_batches"
#: At most this many ids are published (about 40 bytes each): a job has a few hundred batches;
#: a larger one is attributed for the first ids in sorted order, and the page shows the rest unattributed.
MAX_IDS = 2000


def push_job_batches(
    context: Mapping[str, Any], batch_ids: Iterable[str], estimate: Mapping[str, Any] | None = None
) -> None:
    """Push the job's batch ids (and its estimate, once made) for the Batches page.

    The estimate goes under the key the create and the job already use for it
    (:data:`airflow_provider_anthropix.operators.estimate.XCOM_KEY`), so the page shows the
    job's expected cost while its batches run, not only once it is done. A context without a
    task instance (unit tests calling ``execute``) skips both.
    """
    ti = context.get("ti")
    if ti is None:
        return
    ids = sorted({str(b) for b in batch_ids if b})
    if ids:
        ti.xcom_push(key=XCOM_KEY, value=ids[:MAX_IDS])
    if estimate:
        from airflow_provider_anthropix.operators.estimate import push_estimate

        push_estimate(context, estimate)

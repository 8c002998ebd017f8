"""Operator extra links: the batch in the Anthropic console, and where the results landed.

Airflow 3 computes a link once, in the task process when the task finishes, and keeps it
in XCom under the link's ``xcom_key``; the UI shows that stored string. So ``get_link``
runs where the task ran: it reads the task's own XCom (the batch id a create returned, the
summary a fetch returned) and the connection's ``console_url_template`` extra. A link that
cannot be made (the task failed before a batch existed) is the empty string, which the UI
leaves out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: Where a batch is shown when the connection names no template. ``{workspace_id}`` is the
#: connection's ``workspace_id`` extra, or ``default``.
DEFAULT_CONSOLE_URL_TEMPLATE = "https://console.anthropic.com/workspaces/{workspace_id}/batches/{batch_id}"
TEMPLATE_EXTRA = "console_url_template"


class ConsoleTemplateError(ValueError):
    """The connection's ``console_url_template`` cannot make a URL; says why."""


def console_url(batch_id: str, template: str | None = None, workspace_id: str | None = None) -> str:
    """The console URL of one batch, e.g. ``https://console.anthropic.com/workspaces/default/batches/msgbatch_...``."""
    template = (template or "").strip() or DEFAULT_CONSOLE_URL_TEMPLATE
    if urlsplit(template).scheme not in ("http", "https"):
        raise ConsoleTemplateError(f"{TEMPLATE_EXTRA} {template!r} is not an http(s) URL")
    try:
        return template.format(
            batch_id=quote(batch_id, safe=""), workspace_id=quote(workspace_id or "default", safe="")
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise ConsoleTemplateError(
            f"{TEMPLATE_EXTRA} {template!r} may use only {{batch_id}} and {{workspace_id}} ({exc!r})"
        ) from None


def console_list_url(template: str | None = None, workspace_id: str | None = None) -> str:
    """The console's list of batches: the template cut before ``{batch_id}``."""
    template = (template or "").strip() or DEFAULT_CONSOLE_URL_TEMPLATE
    head = template.split("{batch_id}", 1)[0].rstrip("/")
    return console_url("", head, workspace_id)


def results_url(destination: str) -> str:
    """A browsable address for a results folder: the S3 or GCS console for those, the URI itself otherwise."""
    parts = urlsplit(destination)
    bucket = parts.netloc.rpartition("@")[2]
    prefix = parts.path.strip("/")
    if parts.scheme in ("s3", "s3a"):
        return f"https://s3.console.aws.amazon.com/s3/buckets/{quote(bucket)}?prefix={quote(prefix + '/', safe='')}"
    if parts.scheme in ("gs", "gcs"):
        return f"https://console.cloud.google.com/storage/browser/{quote(bucket)}/{quote(prefix)}"
    return destination


def _connection_extras(operator: BaseOperator) -> dict[str, Any]:
    conn_id = getattr(operator, "anthropix_conn_id", None)
    if not conn_id:
        return {}
    from airflow.sdk import BaseHook

    return dict(BaseHook.get_connection(conn_id).extra_dejson or {})


def _returned(ti_key: TaskInstanceKey) -> Any:
    from airflow.sdk.execution_time.xcom import XCom

    return XCom.get_value(ti_key=ti_key, key="return_value")


def _batch_id(operator: BaseOperator, ti_key: TaskInstanceKey) -> str:
    """The batch a task worked on: what it returned (an id, or a summary naming it), else its ``batch_id``."""
    value = _returned(ti_key)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        for key in ("batch_id", "id"):
            if isinstance(value.get(key), str) and value[key]:
                return str(value[key])
    rendered = getattr(operator, "batch_id", None)
    return rendered if isinstance(rendered, str) and rendered and "{{" not in rendered else ""


class AnthropicConsoleLink(BaseOperatorLink):
    """ "Batch in Anthropic console": the batch a create returned or a sensor or fetch worked on."""

    name = "Batch in Anthropic console"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        batch_id = _batch_id(operator, ti_key)
        if not batch_id:
            return ""
        extras = _connection_extras(operator)
        return console_url(batch_id, extras.get(TEMPLATE_EXTRA), extras.get("workspace_id"))


class AnthropicConsoleBatchesLink(BaseOperatorLink):
    """ "Batches in Anthropic console": the console's list, for a job that made several batches."""

    name = "Batches in Anthropic console"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        extras = _connection_extras(operator)
        return console_list_url(extras.get(TEMPLATE_EXTRA), extras.get("workspace_id"))


class BatchResultsLink(BaseOperatorLink):
    """ "Batch results": the folder a fetch published (the S3/GCS console for those stores)."""

    name = "Batch results"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        value = _returned(ti_key)
        destination = value.get("destination") if isinstance(value, dict) else None
        return results_url(destination) if isinstance(destination, str) and destination else ""

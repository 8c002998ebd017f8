"""What Airflow's provider manager reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_anthropix import __version__

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port"],
    "relabeling": {"password": "API Key", "host": "Base URL"},
    "placeholders": {
        "host": "https://api.anthropic.com",
        "password": "sk-ant-...",
        "extra": '{"anthropic_version": "2026-10-21", "timeout": [10, 60], "max_retries": 2}',
    },
}

CONN_FIELDS: dict[str, Any] = {
    "anthropic_version": {
        "label": "API version",
        "schema": {"type": ["string", "null"], "enum": ["2026-10-21", "2023-06-01", None], "default": "2026-10-21"},
        "description": "anthropic-version header. 2026-10-21 rejects temperature/top_p/top_k; 2023-06-01 accepts them.",
    },
    "anthropic_beta": {
        "label": "Beta headers",
        "schema": {"type": ["array", "null"], "items": {"type": "string"}},
        "description": "Values sent in the anthropic-beta header.",
    },
    "workspace_id": {
        "label": "Workspace id",
        "schema": {"type": ["string", "null"]},
        "description": "Sent as anthropic-workspace-id, only for keys that span several workspaces.",
    },
    "timeout": {
        "label": "Timeout (s)",
        "schema": {"type": ["number", "array", "null"], "default": 60},
        "description": "Read timeout in seconds, or [connect, read].",
    },
    "max_retries": {
        "label": "Max retries",
        "schema": {"type": ["integer", "null"], "minimum": 0, "default": 2},
        "description": "Retries of one call on 429/5xx/529/connection errors (a create only when it is safe).",
    },
    "console_url_template": {
        "label": "Console URL template",
        "schema": {"type": ["string", "null"]},
        "description": (
            "Where the task's 'Batch in Anthropic console' link points; {batch_id} and {workspace_id} are "
            "filled in. Default: https://console.anthropic.com/workspaces/{workspace_id}/batches/{batch_id} "
            "(workspace_id: the extra above, or default)."
        ),
    },
    "proxies": {
        "label": "Proxies",
        "schema": {"type": ["object", "null"]},
        "description": 'e.g. {"https": "http://proxy:3128"}',
    },
}

_PACKAGE = "airflow_provider_anthropix"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-anthropix",
        "name": "Anthropix",
        "description": "Anthropic Message Batches API for Apache Airflow: submit, wait (deferrable), export results; batch jobs of any size.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Anthropix",
                "external-doc-url": "https://docs.anthropic.com/en/api/creating-message-batches",
                "tags": ["ai"],
            }
        ],
        "hooks": [{"integration-name": "Anthropix", "python-modules": [f"{_PACKAGE}.hooks.anthropix"]}],
        "operators": [
            {
                "integration-name": "Anthropix",
                "python-modules": [
                    f"{_PACKAGE}.operators.create",
                    f"{_PACKAGE}.operators.cancel",
                    f"{_PACKAGE}.operators.fetch",
                    f"{_PACKAGE}.operators.job",
                    f"{_PACKAGE}.operators.split",
                    f"{_PACKAGE}.operators.table",
                ],
            }
        ],
        "sensors": [{"integration-name": "Anthropix", "python-modules": [f"{_PACKAGE}.sensors.batch"]}],
        "triggers": [
            {
                "integration-name": "Anthropix",
                "python-modules": [f"{_PACKAGE}.triggers.batch", f"{_PACKAGE}.triggers.job"],
            }
        ],
        "extra-links": [
            f"{_PACKAGE}.links.AnthropicConsoleLink",
            f"{_PACKAGE}.links.AnthropicConsoleBatchesLink",
            f"{_PACKAGE}.links.BatchResultsLink",
        ],
        "connection-types": [
            {
                "hook-class-name": f"{_PACKAGE}.hooks.anthropix.AnthropixHook",
                "hook-name": "Anthropix",
                "connection-type": "anthropix",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }

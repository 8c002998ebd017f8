"""A local Message Batches API for tests, demos and users' own DAG tests.

Start it in Python (``run_emulator``) or from a shell (``anthropix-emulator --port 8787``);
point any client, the official ``anthropic`` SDK included, at its URL. See docs/emulator.md.
"""

from __future__ import annotations

from airflow_provider_anthropix.emulator.app import EmulatorApp, create_app
from airflow_provider_anthropix.emulator.config import EmulatorConfig
from airflow_provider_anthropix.emulator.faults import Fault, parse_fault_spec
from airflow_provider_anthropix.emulator.outcomes import MARKER_RE
from airflow_provider_anthropix.emulator.server import EmulatorHandle, run_emulator
from airflow_provider_anthropix.emulator.structured import (
    MAX_TOKENS_MARKER,
    REFUSAL_MARKER,
    SCHEMA_INVALID_MARKER,
    SCHEMA_INVALID_ONCE_MARKER,
    STRUCTURED_MARKER_RE,
)

__all__ = [
    "MARKER_RE",
    "MAX_TOKENS_MARKER",
    "REFUSAL_MARKER",
    "SCHEMA_INVALID_MARKER",
    "SCHEMA_INVALID_ONCE_MARKER",
    "STRUCTURED_MARKER_RE",
    "EmulatorApp",
    "EmulatorConfig",
    "EmulatorHandle",
    "Fault",
    "create_app",
    "parse_fault_spec",
    "run_emulator",
]

"""Fixtures shared by every test module: a local Message Batches emulator and clients for it.

One emulator serves the whole session (starting one costs ~2 ms, stopping ~0.2 s, so
hundreds of tests would add up); each test gets it reset (no batches, statistics,
faults or clock offset) and any change a test makes to ``emulator.config`` is undone
afterwards, so tests stay independent. A test that needs a server of its own (other
key, admin off, ...) uses ``emulator_factory``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_anthropix.emulator import EmulatorHandle, run_emulator

# Airflow reads AIRFLOW_HOME when it is first imported: point it at a throw-away folder
# before any test imports it, so the suite never touches ~/airflow or a user's settings.
_SESSION_HOME = tempfile.mkdtemp(prefix="anthropix-tests-airflow-home-")
os.environ["AIRFLOW_HOME"] = _SESSION_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_HOME}/airflow.db"

#: Fixtures shared by several folders: the S3 API server (``s3_url``, ``s3``).
pytest_plugins = ["tests.support.s3"]

#: The key the session emulator accepts (any other key gets 401).
EMULATOR_API_KEY = "sk-ant-emulator-test-key"
#: Short processing so lifecycle tests end quickly; tests needing an instant end use ``emulator.advance``.
EMULATOR_PROCESSING_SECONDS = 0.3


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorHandle]:
    """The session's emulator (prefer ``emulator``, which resets it for each test)."""
    with run_emulator(
        api_key=EMULATOR_API_KEY,
        processing_seconds=EMULATOR_PROCESSING_SECONDS,
        cancel_seconds=0.2,
        seed=0,
        admin=True,
    ) as handle:
        yield handle


@pytest.fixture
def emulator(emulator_server: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """A freshly reset emulator: ``.url``, ``.stats()``, ``.add_fault(...)``, ``.advance(s)``, ``.config``."""
    config = emulator_server.config
    saved = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    emulator_server.reset()
    yield emulator_server
    for name, value in saved.items():
        setattr(config, name, value)
    emulator_server.reset()


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., EmulatorHandle]]:
    """Start a dedicated emulator with any ``run_emulator`` options; stopped at the end of the test."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> EmulatorHandle:
            return stack.enter_context(run_emulator(**options))

        yield start


@pytest.fixture(scope="session")
def emulator_api_key() -> str:
    """The key the session emulator accepts."""
    return EMULATOR_API_KEY


@pytest.fixture
def emulator_http(emulator: EmulatorHandle) -> Iterator[httpx.Client]:
    """An httpx client for the session emulator with the key and the current API version set."""
    headers = {"x-api-key": EMULATOR_API_KEY, "anthropic-version": "2026-10-21"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def anthropix_conn_env(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the ``anthropix_default`` Airflow connection at the emulator (via the environment)."""
    conn = {"conn_type": "anthropix", "password": EMULATOR_API_KEY, "host": emulator.url}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIX_DEFAULT", json.dumps(conn))
    return "anthropix_default"

"""A StatsD server on loopback for metrics tests, and Airflow's ``Stats`` pointed at it.

Airflow picks its metrics backend when a worker's task runner starts (``stats.initialize``
with the factory ``[metrics]`` names). ``dag.test()`` runs tasks in the test process, whose
``Stats`` was set up long before, so :func:`statsd_server` does what the task runner does,
for Airflow 3.2 and 3.3 alike, and puts the no-op backend back afterwards.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


def initialize_stats() -> None:
    """Build Airflow's ``Stats`` backend from the current ``[metrics]`` settings, as the task runner does."""
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    if hasattr(stats, "initialize"):  # Airflow 3.3: module functions
        stats.initialize(
            factory=stats_utils.get_stats_factory(),
            export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
        )
    else:  # Airflow 3.2: the Stats class
        stats.Stats.initialize(factory=stats_utils.get_stats_factory(stats.Stats))


@dataclass
class StatsdServer:
    """A UDP socket on loopback that keeps what it received: ``name:value|type`` lines (tags after ``,``)."""

    sock: socket.socket
    lines: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def drain(self, wait: float = 0.2) -> list[str]:
        """Every line received so far (waiting up to ``wait`` seconds for the first one)."""
        self.sock.settimeout(wait)
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return self.lines
            self.lines.extend(line for line in data.decode().splitlines() if line)
            self.sock.settimeout(0.05)

    def metrics(self, prefix: str = "anthropix.") -> dict[str, list[tuple[str, dict[str, str]]]]:
        """Metric name (Airflow's ``statsd_prefix`` removed) -> ``(value|type, tags)`` of each line received."""
        found: dict[str, list[tuple[str, dict[str, str]]]] = {}
        for line in self.drain():
            head, _, value = line.partition(":")
            name, *tag_parts = head.split(",")
            name = name.removeprefix("airflow.")
            if not name.startswith(prefix):
                continue
            tags = dict(part.split("=", 1) for part in tag_parts if "=" in part)
            found.setdefault(name, []).append((value, tags))
        return found


@contextlib.contextmanager
def statsd_server(monkeypatch: pytest.MonkeyPatch, *, tags: bool = True) -> Iterator[StatsdServer]:
    """Airflow's metrics on, sent by StatsD to a socket of this test (tags in InfluxDB form with ``tags``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    server = StatsdServer(sock)
    with monkeypatch.context() as patch:
        patch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
        patch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
        patch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(server.port))
        patch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
        patch.setenv("AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED", str(tags))
        initialize_stats()
        try:
            yield server
        finally:
            sock.close()
    initialize_stats()  # the settings are back: Airflow's no-op backend again

"""A StatsD server on loopback for the end-to-end runs: every Airflow process sends its metrics here.

It only collects the datagrams (``name:value|type|#tags``, several per datagram separated by
newlines); the run's final check asks it which ``anthropix.*`` names arrived.
"""

from __future__ import annotations

import socket
import threading


class StatsdListener:
    """Receives UDP datagrams on ``127.0.0.1:<port>`` in a daemon thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="statsd", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                data = self.sock.recv(65_536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.lines.extend(line for line in data.decode(errors="replace").splitlines() if line)

    def names(self) -> set[str]:
        """Every metric name received so far (Airflow's ``statsd_prefix`` included)."""
        with self._lock:
            return {line.split(":", 1)[0] for line in self.lines}

    def env(self) -> dict[str, str]:
        """What makes an Airflow process send its metrics here."""
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        }

    def stop(self) -> None:
        self._stopped.set()
        self.sock.close()
        self._thread.join(5)

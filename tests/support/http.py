"""A base for the small loopback HTTP servers some tests stand up in place of the API."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that answers with ``reply`` and does not log every request to stderr.

    The default log lines would land in the captured output that some suites scan for the key.
    """

    def reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """Send ``status`` with ``headers``, a ``content-length`` and ``body``."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass

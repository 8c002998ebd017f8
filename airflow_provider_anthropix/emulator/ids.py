"""Identifiers that look like the API's (``msgbatch_...``, ``req_...``, ``msg_...``)."""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


class IdMaker:
    """Makes unique ids cheaply: a random per-process prefix plus a counter.

    A retrieve must be answered in microseconds, so the request id is not drawn from the
    OS random source each time; the random prefix keeps ids of two runs apart.
    """

    def __init__(self) -> None:
        self._prefix = _base62(secrets.randbits(60), 10)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def _next(self) -> str:
        with self._lock:
            number = next(self._counter)
        return self._prefix + _base62(number, 14)

    def request_id(self) -> str:
        """A fresh ``req_`` id for one HTTP response."""
        return "req_011" + self._next()

    def batch_id(self) -> str:
        """A fresh ``msgbatch_`` id."""
        return "msgbatch_011" + self._next()


def message_id(seed: int, batch_id: str, custom_id: str) -> str:
    """A stable ``msg_`` id for one succeeded result (same inputs, same id)."""
    digest = hashlib.blake2b(f"{seed}\0{batch_id}\0{custom_id}".encode(), digest_size=15).digest()
    return "msg_011" + _base62(int.from_bytes(digest, "big"), 21)

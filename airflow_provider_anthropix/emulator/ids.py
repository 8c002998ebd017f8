"""Identifiers that look like the API's (``msgbatch_...``, ``req_...``, ``msg_...``)."""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


#: Every two-digit string, so an id takes half as many divisions (a result line has one).
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)


def _base62(number: int, width: int) -> str:
    """The last ``width`` base-62 digits of ``number``, most significant first."""
    chunks = []
    for _ in range(width // 2):
        number, pair = divmod(number, 3844)
        chunks.append(_PAIRS[pair])
    if width & 1:
        chunks.append(_ALPHABET[number % 62])
    return "".join(reversed(chunks))


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


def _base62_21(number: int) -> str:
    """``_base62(number, 21)`` unrolled: every succeeded result line has one, and the loop cost half its time."""
    p = _PAIRS
    q, a = divmod(number, 3844)
    q, b = divmod(q, 3844)
    q, c = divmod(q, 3844)
    q, d = divmod(q, 3844)
    q, e = divmod(q, 3844)
    q, f = divmod(q, 3844)
    q, g = divmod(q, 3844)
    q, h = divmod(q, 3844)
    q, i = divmod(q, 3844)
    q, j = divmod(q, 3844)
    return _ALPHABET[q % 62] + p[j] + p[i] + p[h] + p[g] + p[f] + p[e] + p[d] + p[c] + p[b] + p[a]


def message_id(seed: int, batch_id: str, custom_id: str) -> str:
    """A stable ``msg_`` id for one succeeded result (same inputs, same id)."""
    digest = hashlib.blake2b(f"{seed}\0{batch_id}\0{custom_id}".encode(), digest_size=15).digest()
    return "msg_011" + _base62_21(int.from_bytes(digest, "big"))


class MessageIds:
    """:func:`message_id` for the lines of one batch: the hash of ``seed`` and ``batch_id`` is taken once."""

    __slots__ = ("_head",)

    def __init__(self, seed: int, batch_id: str) -> None:
        self._head = hashlib.blake2b(f"{seed}\0{batch_id}\0".encode(), digest_size=15)

    def __call__(self, custom_id: str) -> str:
        digest = self._head.copy()
        digest.update(custom_id.encode())
        return "msg_011" + _base62_21(int.from_bytes(digest.digest(), "big"))

"""Row keys to custom_ids, and back.

A custom_id is 1-64 characters of ``[A-Za-z0-9_-]``; real keys often are not (too long,
spaces, unicode, integers). A key that already is a valid custom_id is used as it is; any
other key gets a stable derived id (``k-`` + 40 hex digits of a SHA-256 of its type and value),
so a re-run derives the same ids. The output table carries the original key in its own
column, so the derived id never has to be turned back. Without an id column the row's
position (0-based) is its key: ``row-<position>``.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
from typing import Any

from airflow_provider_anthropix.api.errors import AnthropixError
from airflow_provider_anthropix.api.limits import CUSTOM_ID_RE

#: What a row without an id column is called before its position.
ROW_ID_PREFIX = "row-"


class RowKeyError(AnthropixError, ValueError):
    """A row's key cannot name a request (null, or not a scalar)."""


def custom_id_for(key: Any) -> str:
    """The custom_id of a row whose key is ``key`` (a valid custom_id string as is, otherwise derived)."""
    if isinstance(key, str):
        if CUSTOM_ID_RE.fullmatch(key):
            return key
        material = b"s:" + key.encode("utf-8", "surrogatepass")
    elif key is None:
        raise RowKeyError("the key is null")
    elif isinstance(key, bool):
        material = b"b:" + str(key).encode()
    elif isinstance(key, int):
        material = b"i:" + str(key).encode()
    elif isinstance(key, float):
        material = b"f:" + repr(key).encode()
    elif isinstance(key, bytes):
        material = b"x:" + key
    elif isinstance(key, (datetime.date, datetime.time, decimal.Decimal)):
        material = type(key).__name__.encode() + b":" + str(key).encode()
    else:
        raise RowKeyError(f"the key is a {type(key).__name__}, not a scalar")
    return "k-" + hashlib.sha256(material).hexdigest()[:40]


def position_id(position: int) -> str:
    """The custom_id of the row at ``position`` when the table has no id column."""
    return f"{ROW_ID_PREFIX}{position}"

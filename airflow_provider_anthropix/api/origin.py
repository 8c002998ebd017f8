"""Which origin a URL points at, and which URLs are too ambiguous to send the API key to.

Different URL parsers disagree on odd URLs: for ``http://a:1\\@b:2/`` ``urllib.parse`` sees
host ``b`` port 2, urllib3 (under requests) connects to ``a`` port 1, httpx to ``b`` port 2.
A check made with one parser and a request sent with another is therefore no check. The
provider closes this in two steps, both applied to every request that carries the key:

1. :func:`plain_url` refuses anything that is not a plain absolute ``http(s)`` URL, the
   only shape where all parsers agree: lowercase ``http://`` or ``https://``, a host of
   ASCII letters, digits, dots and dashes (or a bracketed IPv6 literal), an optional
   decimal port, then a path/query of printable ASCII without backslashes or fragments.
   No userinfo, no percent-encoding, whitespace, control or non-ASCII characters.
2. Each client then compares the origin *its own library* derived from the prepared
   request (urllib3's ``parse_url`` for requests, ``httpx.URL`` for httpx) with the
   connection's origin, see :func:`same_origin`.

Hosts are compared as strings after lowercasing: ``127.0.0.1.`` (trailing dot) and
``localhost`` are other hosts than ``127.0.0.1`` even where they resolve to the same address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCHEME_PORTS = {"http": 80, "https": 443}
_URL = re.compile(r"(?P<scheme>https?)://(?P<authority>[^/?]*)(?P<rest>[/?].*)?", re.DOTALL)
_AUTHORITY = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]+))?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")


class AmbiguousURLError(ValueError):
    """The URL is not a plain absolute http(s) URL; the reason says what is wrong with it."""


@dataclass(frozen=True)
class Origin:
    """Scheme, lowercase host (IPv6 without brackets) and port (the scheme's default when absent)."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, scheme: str | None, host: str | None, port: int | None) -> Origin:
        """Normalise what a library reports (its host may carry IPv6 brackets or uppercase)."""
        scheme = (scheme or "").lower()
        host = (host or "").lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return cls(scheme, host, port if port is not None else _SCHEME_PORTS.get(scheme, 0))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def plain_url(url: object) -> Origin:
    """The origin of a plain absolute http(s) URL; :class:`AmbiguousURLError` for anything else."""
    if not isinstance(url, str):
        raise AmbiguousURLError(f"is not a string but {type(url).__name__}")
    for char in url:
        if not "!" <= char <= "~":
            kind = "whitespace" if char.isspace() else "a non-ASCII" if ord(char) > 127 else "a control"
            raise AmbiguousURLError(f"contains {kind} character ({char!r})")
    if "\\" in url:
        raise AmbiguousURLError("contains a backslash, which URL parsers read differently")
    if "#" in url:
        raise AmbiguousURLError("contains a fragment (#)")
    match = _URL.fullmatch(url)
    if match is None:
        raise AmbiguousURLError("is not an absolute URL starting with http:// or https://")
    authority = match["authority"]
    if "@" in authority:
        raise AmbiguousURLError("has userinfo (user@ or user:password@ before the host)")
    if "%" in authority:
        raise AmbiguousURLError("has percent-encoding in the host")
    if not authority:
        raise AmbiguousURLError("has no host")
    parts = _AUTHORITY.fullmatch(authority)
    if parts is None:
        raise AmbiguousURLError(f"has a host or port that is not plain ({authority!r})")
    port_text = parts["port"]
    port: int | None = None
    if port_text is not None:
        if _PORT.fullmatch(port_text) is None or int(port_text) > 65535:
            raise AmbiguousURLError(f"has a port that is not a number from 1 to 65535 ({port_text!r})")
        port = int(port_text)
    return Origin.of(match["scheme"], parts["host"], port)


def ambiguity(url: object) -> str | None:
    """Why ``url`` is not a plain http(s) URL, or None when it is."""
    try:
        plain_url(url)
    except AmbiguousURLError as exc:
        return str(exc)
    return None

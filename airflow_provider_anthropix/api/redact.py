"""Removing secrets from every text the provider builds, whatever a server sent back.

A server, a proxy or a gateway may echo request headers in an error body (some debugging
proxies do exactly that), so an exception built from the body would carry the API key into
task logs, the UI and XCom-free but still stored error texts. The clients therefore build
every error through a :class:`Redactor` made from the connection's secrets: the key and any
credentials in a proxy URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

#: What a secret is replaced with.
MASK = "[redacted]"
#: Shorter strings are not treated as secrets: masking every "a" would destroy the message
#: and protect nothing worth protecting.
MIN_SECRET_LENGTH = 3
_MAX_DEPTH = 50


def url_credentials(url: str | None) -> list[str]:
    """The user name and password of ``scheme://user:password@host`` (raw and unquoted), if any."""
    if not url or "@" not in url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.username or "", parts.password or ""]
    except ValueError:
        # Not parseable: take everything between "//" and the last "@" as secret.
        authority = url.split("//", 1)[-1].rsplit("@", 1)[0]
        found = authority.split(":", 1)
    return [value for raw in found for value in {raw, unquote(raw)} if value]


def _any_quoting(secret: str) -> str:
    """A pattern for ``secret`` with each character as itself or percent-encoded, in either case of hex digit.

    Servers and proxies echo a header URL-quoted in many ways: ``quote`` keeps ``/`` but
    ``quote_plus`` does not, other languages' encoders keep ``@``, ``+`` or ``:``, some write
    ``%2f`` rather than ``%2F``, and a form decoder turns ``+`` into a space. Listing spellings
    misses some; a pattern that takes every character either way catches them all.
    """
    parts = []
    for char in secret:
        encoded = "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        options = [re.escape(char), f"(?i:{re.escape(encoded)})"]
        if char == "+":
            options.append(" ")  # quote_plus's space, as a form decoder reads a raw "+"
        parts.append(f"(?:{'|'.join(options)})")
    return "".join(parts)


class Redactor:
    """Replaces each secret, however it is URL-quoted, with :data:`MASK`.

    :param secrets: strings that must never appear in a message.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found = {secret for secret in secrets if secret and len(secret) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted(found, key=len, reverse=True)
        self._pattern = re.compile("|".join(_any_quoting(secret) for secret in self._secrets)) if found else None

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def value(self, obj: Any, _depth: int = 0) -> Any:
        """A copy of a decoded JSON value with every string redacted (nesting beyond 50 levels is dropped)."""
        if isinstance(obj, str):
            return self(obj)
        if _depth >= _MAX_DEPTH:
            return MASK
        if isinstance(obj, Mapping):
            return {self(str(k)): self.value(v, _depth + 1) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(item, _depth + 1) for item in obj]
        return obj


#: A redactor with nothing to hide, for code paths that have no configuration.
NOTHING = Redactor(())

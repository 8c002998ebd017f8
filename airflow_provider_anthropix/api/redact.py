"""Removing secrets from every text the provider builds, whatever a server sent back.

A server, a proxy or a gateway may echo request headers in an error body (some debugging
proxies do exactly that), so an exception built from the body would carry the API key into
task logs, the UI and XCom-free but still stored error texts. The clients therefore build
every error through a :class:`Redactor` made from the connection's secrets: the key and any
credentials in a proxy URL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

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


class Redactor:
    """Replaces each secret (and its URL-quoted spelling) with :data:`MASK`.

    :param secrets: strings that must never appear in a message.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        spellings: set[str] = set()
        for secret in secrets:
            if not secret or len(secret) < MIN_SECRET_LENGTH:
                continue
            spellings.update({secret, quote(secret, safe=""), quote(secret)})
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted(spellings, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

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
